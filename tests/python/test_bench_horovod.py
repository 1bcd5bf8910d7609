"""`ringpress bench horovod`: the example script on ringpress vs its DDP + gloo twin, 2 ranks
under torchrun, small (16 steps per run, one run per mode)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_horovod_bench_times_every_mode_and_both_train(tmp_path):
    out = tmp_path / "hv.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "-m", "ringpress_bench", "horovod", "--repeats", "1", "--train-samples", "1024",
           "--json", str(out)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads(out.read_text())
    rows = {r["mode"]: r for r in rec["rows"]}
    assert set(rows) == {"gloo", "ringpress", "gloo-fp16", "ringpress-fp16"}
    for r in rows.values():
        (run,) = r["runs"]
        assert run["steps"] == 16  # 1024 samples / 2 ranks / batch 32
        assert 0 < r["step_s"] < 5
        assert run["accuracy"] > 0.2, r  # chance is 0.1: every mode trained
    assert rows["gloo"]["speedup_vs_gloo"] == 1.0
    assert "gloo / mode" in res.stdout
