"""`ringpress bench compressed` end to end: 2 ranks, a small buffer, JSON fields and values."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ranks import free_port


def test_compressed_bench_two_ranks(tmp_path):
    port = free_port()
    out = (
        tmp_path / "not" / "made" / "rec.json"
    )  # the bench makes the folder (a fresh clone has no bench/results/)
    procs = []
    for r in range(2):
        env = dict(
            os.environ, RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
        env.pop("RINGPRESS_TRANSPORT", None)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ringpress_bench",
                    "compressed",
                    "--size",
                    "1M",
                    "--repeats",
                    "2",
                    "--modes",
                    "gloo,plain,lossless,int8,topk,auto",
                    "--json",
                    str(out),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (so, se) in zip(procs, outs, strict=False):
        assert p.returncode == 0, so[-2000:] + se[-2000:]
    assert "auto chose" in outs[0][0]
    rec = json.loads(out.read_text())
    assert rec["ranks"] == 2 and rec["nbytes"] == 1 << 20
    rows = {r["mode"]: r for r in rec["rows"]}
    assert set(rows) == {"gloo", "plain", "lossless", "int8", "topk", "auto"}
    for r in rows.values():
        assert len(r["samples_s"]) == 2 and r["median_s"] > 0
        assert abs(r["speedup_vs_gloo"] - rows["gloo"]["median_s"] / r["median_s"]) < 1e-9
    assert rows["plain"]["rel_err"] < 1e-6 and rows["lossless"]["rel_err"] < 1e-6
    assert 0 < rows["int8"]["rel_err"] < 0.05
    # Wire bytes: int8 sends about a quarter of plain, topk far less.
    assert rows["int8"]["wire_bytes_per_rank"] < 0.3 * rows["plain"]["wire_bytes_per_rank"]
    assert rows["topk"]["wire_bytes_per_rank"] < 0.1 * rows["plain"]["wire_bytes_per_rank"]
    assert rows["auto"]["auto_choices"] and set(rows["auto"]["auto_choices"]) <= {
        "none",
        "lossless",
        "int8",
        "bf16",
    }


def test_compressed_bench_needs_a_job():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    p = subprocess.run(
        [sys.executable, "-m", "ringpress_bench", "compressed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "RANK" in p.stderr and "Traceback" not in p.stderr


LOCK_SCRIPT = r"""
import sys, time, numpy as np
from ringpress_bench import gradients

def fake_train(min_elems, verbose=True):  # stands in for the model training (seconds)
    with open(sys.argv[1], "a") as f:
        f.write("trained\n")
    time.sleep(1.0)
    return np.arange(min_elems, dtype=np.float32), {"fake": True}

gradients._train_and_collect = fake_train
g = gradients.fp32_gradients(1000, verbose=False)
print(g.size, float(g[999]))
"""


def test_gradient_cache_is_built_once_when_ranks_miss_it_together(tmp_path):
    """Ranks that all miss the gradient cache: one trains, the others wait on its lock (not in a
    collective whose timeout training could outlast) and load what it wrote."""
    script = tmp_path / "lock.py"
    script.write_text(LOCK_SCRIPT)
    log = tmp_path / "trained.log"
    env = dict(os.environ, RINGPRESS_CACHE_DIR=str(tmp_path / "cache"))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(log)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.split() == ["1000", "999.0"], out
    assert log.read_text().count("trained") == 1
