"""build_info(): contents, consistency with the installed libraries, and the CLI view of it."""

import json
import re
import subprocess
import sys
from importlib import metadata

import ringpress

EXPECTED_KEYS = {
    "version",
    "compiler",
    "build_type",
    "simd",
    "simd_best",
    "simd_built",
    "shuffle_kernel",
    "reduce_kernel",
    "cpu_vendor",
    "cpu_features",
    "cuda",
    "cuda_architectures",
    "cuda_runtime_version",
    "cuda_devices",
    "lz4",
    "lz4_compiled",
    "zstd",
    "zstd_compiled",
    "sanitize",
}
LEVELS = ["generic", "sse2", "avx2", "avx512"]


def test_keys_and_types():
    info = ringpress.build_info()
    assert set(info) == EXPECTED_KEYS
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["cuda_devices"], int) and info["cuda_devices"] >= 0
    assert isinstance(info["simd_built"], list) and "generic" in info["simd_built"]


def test_version_matches_package_metadata():
    info = ringpress.build_info()
    assert info["version"] == ringpress.__version__ == metadata.version("ringpress")
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["version"])


def test_simd_choice_is_consistent():
    info = ringpress.build_info()
    assert info["simd"] in LEVELS and info["simd_best"] in LEVELS
    assert info["simd"] in info["simd_built"]
    assert LEVELS.index(info["simd"]) <= LEVELS.index(info["simd_best"])
    assert info["shuffle_kernel"] == info["simd"]
    # Reductions have no SSE2 copy: that level uses the generic one.
    assert info["reduce_kernel"] == {"sse2": "generic"}.get(info["simd"], info["simd"])
    # The chosen level must be one the CPU can run (the kernel list comes from cpuid + xgetbv).
    assert info["simd"] in ringpress._core.simd_levels_supported()
    feats = set(info["cpu_features"])
    if info["simd"] == "avx512":
        assert {"avx512f", "avx512bw", "os_avx512"} <= feats
    if info["simd"] == "avx2":
        assert {"avx2", "os_avx"} <= feats


def test_simd_features_agree_with_proc_cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return
    feats = set(ringpress.build_info()["cpu_features"])
    assert ("avx2" in feats) == ("avx2" in flags)
    assert ("avx512bw" in feats) == ("avx512bw" in flags)
    assert ("sse4.2" in feats) == ("sse4_2" in flags)


def test_library_versions_match_the_reference_packages():
    info = ringpress.build_info()
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["lz4"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["zstd"])
    # Runtime library and headers come from the same system packages in this build.
    assert info["lz4"].split(".")[0] == info["lz4_compiled"].split(".")[0]
    assert info["zstd"].split(".")[:2] == info["zstd_compiled"].split(".")[:2]


def test_cuda_fields():
    info = ringpress.build_info()
    if info["cuda"]:
        assert info["cuda_runtime_version"] >= 11000
        assert "80" in info["cuda_architectures"] and "90" in info["cuda_architectures"]
    else:
        assert info["cuda_runtime_version"] == 0 and info["cuda_devices"] == 0


def test_env_cap_lowers_the_level():
    code = "import ringpress, json; print(json.dumps(ringpress.build_info()))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"RINGPRESS_SIMD": "generic", "PATH": "/usr/bin:/bin"},
    )
    info = json.loads(out.stdout)
    assert info["simd"] == "generic" and info["shuffle_kernel"] == "generic"


def test_bad_env_cap_is_a_usage_error():
    code = (
        "import ringpress\n"
        "try:\n    ringpress.build_info()\n"
        "except ringpress.UsageError as e:\n    print('UsageError', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"RINGPRESS_SIMD": "avx9000", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.startswith("UsageError") and "avx9000" in out.stdout


def test_cli_info_json():
    out = subprocess.run(
        [sys.executable, "-m", "ringpress", "info", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["version"] == ringpress.__version__


def test_cli_rejects_unknown_command():
    out = subprocess.run(
        [sys.executable, "-m", "ringpress", "frobnicate"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "invalid choice" in out.stderr and "Traceback" not in out.stderr
