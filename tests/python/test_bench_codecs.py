"""The codec benchmark (``ringpress bench codecs``, ringpress_bench.lossless_codecs) end to end at a
small size: every config round-trips and the record is complete."""

import json

import pytest

codecs_bench = pytest.importorskip("ringpress_bench.lossless_codecs")
pytest.importorskip("blosc2")


def test_quick_run_records_every_config(tmp_path):
    out = tmp_path / "codecs.json"
    codecs_bench.run(["--quick", "--datasets", "fp32,topk", "--json", str(out)])
    rec = json.loads(out.read_text())
    assert rec["config"]["quick"] is True
    assert set(rec["datasets"]) == {"fp32", "topk"}
    for name, ds in rec["datasets"].items():
        by_config = {r["config"]: r for r in ds["results"]}
        for cfg in (
            "ringpress zstd-1 auto",
            "ringpress lz4-1 auto",
            "blosc2 zstd-1 byte",
            "blosc2 lz4-9 bit",
            "zstandard-1",
        ):
            assert cfg in by_config, (name, sorted(by_config))
        for r in ds["results"]:
            assert r["verified"] is True, r["config"]  # bit-exact round trip before timing
            assert r["compress_MBps"] > 0 and r["decompress_MBps"] > 0
        auto = by_config["ringpress zstd-1 auto"]
        assert auto["compare_to"] == "blosc2 zstd-1 byte"
        assert auto["vs_blosc2"]["compress_speedup"] > 0
        assert auto["ratio"] > (1.05 if name == "fp32" else 20)
