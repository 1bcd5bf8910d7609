"""``ringpress bench collectives``: every op runs on ringpress (dist and raw) and gloo in one job,
is checked, and lands in the table and the JSON record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def test_collectives_benchmark_runs_every_op_side_by_side(tmp_path):
    out = tmp_path / "c.json"
    ops = "all_reduce,reduce,gather,scatter,all_to_all,p2p,barrier"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ringpress_bench",
            "collectives",
            "--quick",
            "--nranks",
            "3",
            "--ops",
            ops,
            "--sizes",
            "4K,64K",
            "--repeats",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["nranks"] == 3 and rec["native"] is True
    seen = {(r["op"], r["bytes"]) for r in rec["records"]}
    for op in ops.split(","):
        for size in [0] if op == "barrier" else [4096, 65536]:
            assert (op, size) in seen, (op, size, seen)
    for r in rec["records"]:
        med = r["median_s"]
        assert med["ringpress"] > 0 and med["gloo"] > 0, r
        assert len(r["samples"]["ringpress"]) == 2
        if r["op"] in ("all_reduce", "barrier"):
            assert med["raw"] > 0, r  # the raw Communicator has these
    assert "gloo/rp" in proc.stdout and "all_to_all" in proc.stdout


def test_isolated_mode_times_lone_calls(tmp_path):
    out = tmp_path / "iso.json"
    cmd = [sys.executable, "-m", "ringpress_bench", "collectives", "--isolated", "--nranks", "2"]
    cmd += ["--ops", "all_reduce,broadcast", "--sizes", "4K", "--repeats", "2", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "one call after a barrier per sample" in proc.stdout
    rec = json.loads(out.read_text())
    assert rec["config"]["isolated"] is True
    assert {r["op"] for r in rec["records"]} == {"all_reduce", "broadcast"}
    for r in rec["records"]:
        for name in ("raw", "ringpress", "gloo"):  # 5 x --repeats lone calls each
            assert len(r["samples"][name]) == 10 and min(r["samples"][name]) > 0, (name, r)
