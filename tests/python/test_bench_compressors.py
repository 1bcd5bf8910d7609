"""The compressor benchmark (``ringpress bench compressors``, ringpress_bench.gradient_compressors)
end to end at a small size: every method is checked and recorded."""

import json
import math

import pytest

pytest.importorskip("torch")
compressors_bench = pytest.importorskip("ringpress_bench.gradient_compressors")

RINGPRESS = (
    "ringpress TopK exact",
    "ringpress TopK sampled",
    "ringpress TopK sampled fp16",
    "ringpress RandomK",
    "ringpress Threshold",
    "ringpress Quantize int8",
    "ringpress Quantize int4",
    "ringpress Quantize int4 stoch",
    "ringpress Quantize int2 stoch",
    "ringpress Ternary",
    "ringpress FP16",
    "ringpress BF16",
    "ringpress Sign",
    "ringpress Pipeline(int8, zstd-1)",
    "ringpress Pipeline(TopK fp16, zstd-1)",
)
PEERS = (
    "torch.topk",
    "numpy argpartition",
    "numpy DGC sampled",
    "torch int8 block",
    "torch quantize_per_tensor",
    "torch QSGD int4",
    "numpy float16",
    "torch float16",
    "torch bfloat16",
    "torch sign 1-bit",
)


def test_quick_run_records_every_method(tmp_path):
    out = tmp_path / "compressors.json"
    compressors_bench.run(["--quick", "--json", str(out)])
    rec = json.loads(out.read_text())
    assert rec["config"]["quick"] is True
    assert out.with_suffix(".png").stat().st_size > 0
    assert "ringpress_build_info" in rec["machine"]
    rows = {r["method"]: r for r in rec["results"]}
    assert set(rows) == set(RINGPRESS + PEERS), sorted(rows)
    repeats = rec["config"]["repeats"]
    for name, r in rows.items():
        assert r["verified"] is True, name
        assert math.isfinite(r["rel_l2_error"]) and r["rel_l2_error"] >= 0, name
        assert r["ratio"] > 1, name
        assert len(r["encode_samples_s"]) == len(r["decode_samples_s"]) == repeats, name
        assert r["encode_MBps"] > 0 and r["decode_MBps"] > 0, name
        for peer in r["peers"]:
            assert peer in rows, (name, peer)
        if r["lib"] == "ringpress" and r["peers"]:
            assert [c["peer"] for c in r["vs_peers"]] == r["peers"], name
    # error bounds
    for name in ("ringpress Quantize int8", "torch int8 block", "ringpress Pipeline(int8, zstd-1)"):
        assert rows[name]["rel_l2_error"] < 0.02, name
    for name in ("ringpress FP16", "numpy float16", "torch float16"):
        assert rows[name]["rel_l2_error"] < 1e-3, name
    assert rows["ringpress BF16"]["rel_l2_error"] < 1e-2
    for name in ("ringpress TopK exact", "ringpress TopK sampled", "ringpress Sign"):
        assert rows[name]["rel_l2_error"] < 1, name
    # same per-block scale rule (amax/127) as the torch peer: error no worse
    assert (
        rows["ringpress Quantize int8"]["rel_l2_error"]
        < 1.1 * rows["torch int8 block"]["rel_l2_error"]
    )
    # ratios
    assert rows["ringpress Quantize int8"]["ratio"] > 3.9
    assert rows["ringpress FP16"]["ratio"] > 1.99
    assert rows["ringpress Sign"]["ratio"] > 25
    # top-k counts
    tol = rec["config"]["tolerance"]
    k = rec["config"]["k"]
    assert rows["ringpress TopK exact"]["count"] == k
    assert rows["torch.topk"]["count"] == k
    for name in (
        "ringpress TopK sampled",
        "ringpress TopK sampled fp16",
        "ringpress Pipeline(TopK fp16, zstd-1)",
    ):
        assert k <= rows[name]["count"] <= math.ceil(k * (1 + tol)), name
    assert rows["ringpress RandomK"]["count"] == k
    assert rows["ringpress TopK exact"]["ratio"] > 50
    # lossless stage gains
    for name in ("ringpress Pipeline(int8, zstd-1)", "ringpress Pipeline(TopK fp16, zstd-1)"):
        assert rows[name]["vs_peers"][0]["ratio_gain"] > 1, name
