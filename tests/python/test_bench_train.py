"""`ringpress bench train` end to end at a tiny size: 2 ranks spawned by the command itself, the
JSON record's fields and values (step times, bytes per mode, held-out loss identical for gloo and
ringpress plain), a mode failing on one rank becoming a "skipped" row, bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("ringpress.torch")

TINY = [
    "--width",
    "64",
    "--depth",
    "2",
    "--batch",
    "16",
    "--steps",
    "3",
    "--warmup",
    "2",
    "--data-mb",
    "0.3",
    "--eval-samples",
    "128",
    "--no-progress",
]


def _train(*args: str, env: dict | None = None, timeout: float = 120):
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RINGPRESS_TRANSPORT")
    }
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ringpress_bench", "train", *args],
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_train_bench_two_ranks(tmp_path):
    out = tmp_path / "rec.json"
    res = _train(
        *TINY,
        "--modes",
        "compute,gloo,gloo-bf16,ringpress,ringpress-int8,ringpress-topk,gloo-powersgd,"
        "ringpress-powersgd",
        "--json",
        str(out),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    assert "held-out loss" in res.stdout and "x compute" in res.stdout
    rec = json.loads(out.read_text())
    cfg = rec["config"]
    assert rec["benchmark"] == "bench.train" and cfg["world_size"] == 2 and cfg["how"] == "alone"
    assert cfg["width"] == 64 and cfg["depth"] == 2 and cfg["steps"] == 3
    assert rec["versions"]["torch"] and rec["machine"]["python"]
    rows = {r["mode"]: r for r in rec["rows"]}
    assert list(rows) == [
        "compute",
        "gloo",
        "gloo-bf16",
        "ringpress",
        "ringpress-int8",
        "ringpress-topk",
        "gloo-powersgd",
        "ringpress-powersgd",
    ]
    for r in rows.values():
        assert r["status"] == "ok", r
        assert len(r["samples_s"]) == 2 and all(len(s) == 3 for s in r["samples_s"])
        assert all(t > 0 for s in r["samples_s"] for t in s) and r["median_s"] > 0
        assert abs(r["vs_compute"] - r["median_s"] / rows["compute"]["median_s"]) < 1e-9
        assert abs(r["speedup_vs_gloo"] - rows["gloo"]["median_s"] / r["median_s"]) < 1e-9
        assert abs(r["time_vs_bf16"] - r["median_s"] / rows["gloo-bf16"]["median_s"]) < 1e-9
        assert 0 < r["heldout_loss"] < 10 and len(r["train_loss"]) == 5
        if r["mode"] != "compute":  # synchronised: every rank holds the same parameters
            assert r["heldout_loss_spread"] < 1e-6
    # Same seed, data and averaging: ringpress plain trains exactly like gloo.
    g, p = rows["gloo"]["heldout_loss"], rows["ringpress"]["heldout_loss"]
    assert abs(g - p) <= 1e-6 * abs(g)
    assert rows["gloo"]["loss_rel_vs_uncompressed"] == 0.0
    # Bytes: none for compute; the gloo estimate is close to what ringpress plain measures
    # (headers included); int8 and topk send far less.
    plain = rows["ringpress"]["bytes_sent_per_step"]
    assert rows["compute"]["bytes_sent_per_step"] == 0
    assert rows["gloo"]["bytes_source"].startswith("estimate")
    assert rows["ringpress"]["bytes_source"].startswith("measured")
    assert 0.8 < plain / rows["gloo"]["bytes_sent_per_step"] < 1.3
    # torch's bf16 hook: half of gloo's bytes, and it trains (bf16 rounding, a small loss change)
    half = rows["gloo-bf16"]["bytes_sent_per_step"] / rows["gloo"]["bytes_sent_per_step"]
    assert abs(half - 0.5) < 1e-3, half
    assert abs(rows["gloo-bf16"]["loss_rel_vs_uncompressed"]) < 0.05
    assert 0 < rows["ringpress-int8"]["bytes_sent_per_step"] < 0.4 * plain
    assert 0 < rows["ringpress-topk"]["bytes_sent_per_step"] < 0.4 * plain
    assert abs(rows["ringpress-int8"]["loss_rel_vs_uncompressed"]) < 0.05
    assert rows["ringpress-int8"]["kinds_used"] == {"int8": 5}  # one bucket, 5 steps
    # torch's PowerSGD hook on the ringpress group: it compresses (measured bytes far below
    # plain) and, two ranks summing in one order, trains exactly as it does on gloo.
    g, p = rows["gloo-powersgd"]["heldout_loss"], rows["ringpress-powersgd"]["heldout_loss"]
    assert abs(g - p) <= 1e-6 * abs(g)
    assert rows["ringpress-powersgd"]["bytes_source"].startswith("measured")
    assert 0 < rows["ringpress-powersgd"]["bytes_sent_per_step"] < 0.4 * plain
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert out.with_suffix(".png").stat().st_size > 1000


def test_a_mode_failing_on_one_rank_is_skipped(tmp_path):
    out = tmp_path / "rec.json"
    res = _train(
        *TINY,
        "--modes",
        "gloo,ringpress-int8",
        "--json",
        str(out),
        "--no-plot",
        env={"RINGPRESS_BENCH_TRAIN_FAIL": "ringpress-int8:1"},
        timeout=90,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    assert (
        "ringpress-int8" in res.stdout and "skipped: RuntimeError: injected failure" in res.stdout
    )
    rows = {r["mode"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["gloo"]["status"] == "ok"
    assert rows["ringpress-int8"]["status"] == "skipped"
    assert "(rank 1)" in rows["ringpress-int8"]["reason"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--modes", "gloo,nccl"], "unknown mode 'nccl'"),
        (["--modes", "ringpress-int9"], "unknown mode 'ringpress-int9'"),
        (["--steps", "0"], "--steps must be positive"),
        (["--ratio", "2"], "--ratio must be in (0, 1]"),
    ],
)
def test_bad_arguments(args, message):
    res = _train(*args, timeout=60)
    assert res.returncode == 2 and message in res.stderr and "usage:" in res.stderr
    assert "Traceback" not in res.stderr
