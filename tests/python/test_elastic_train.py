"""Fault-tolerant training (issue 20): ``ringpress bench elastic`` runs the same training job
undisturbed and with a rank killed (SIGKILL) every few steps and restarted, as real processes
around a store the supervisor hosts. Checked here on a small configuration: both runs take the
same number of optimizer steps, every rank ends with bit-identical parameters, the killed run's
held-out loss is within 2% of the undisturbed one's, the survivors complete the next step soon
after each kill, and the replacements join (receiving the state from rank 0)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_training_survives_kills_and_replacements_rejoin(tmp_path):
    out = tmp_path / "elastic.json"
    cmd = [
        sys.executable,
        "-m",
        "ringpress_bench",
        "elastic",
        "--nranks=3",
        "--steps=150",
        "--kill-every=50",
        "--width=128",
        "--batch=384",
        "--wait-for-replacements",
        f"--json={out}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    base, hit = res["undisturbed"], res["killed"]
    assert base["steps"] == hit["steps"] == [150]
    assert base["identical"] and hit["identical"]
    assert abs(res["loss_ratio"] - 1) < 0.02, res["loss_ratio"]
    assert len(hit["kills"]) == 2
    for k in hit["kills"]:
        # The survivors shrink and finish the step within round trips (2 s is the issue's
        # target; the bound leaves room for a loaded machine).
        assert k["to_next_step_s"] is not None and k["to_next_step_s"] < 10, k
    assert all(k["replacement_start_to_join_s"] is not None for k in hit["kills"]), hit["kills"]
    assert hit["final_size"] == 3
    assert any(r["left_out"] for r in hit["recoveries"])
