"""The build's own error messages: unknown options and missing system libraries (configure only)."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CMAKE = shutil.which(
    "cmake", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
)

pytestmark = pytest.mark.skipif(
    CMAKE is None or not os.path.exists(os.path.join(ROOT, "CMakeLists.txt")),
    reason="needs cmake and the source tree",
)


def configure(tmp_path, *args):
    return subprocess.run(
        [CMAKE, "-S", ROOT, "-B", str(tmp_path / "b"), "-DRINGPRESS_CUDA=OFF", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plain_configure_succeeds(tmp_path):
    r = configure(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ringpress 0." in r.stdout and "SIMD kernels" in r.stdout


def test_unknown_option_is_rejected_with_the_valid_names(tmp_path):
    r = configure(tmp_path, "-DRINGPRESS_CUDE=ON")
    assert r.returncode != 0
    assert "unknown build option 'RINGPRESS_CUDE'" in r.stderr
    assert "RINGPRESS_CUDA" in r.stderr and "docs/building.md" in r.stderr


def test_bad_option_value_is_rejected(tmp_path):
    r = configure(tmp_path, "-DRINGPRESS_SANITIZE=memory")
    assert r.returncode != 0 and "RINGPRESS_SANITIZE must be" in r.stderr


def test_missing_library_names_the_package(tmp_path):
    # Hide the system headers and libraries from find_path/find_library (compilers stay visible):
    # CMake must stop at the first missing library and name the package to install.
    r = configure(
        tmp_path,
        "-DCMAKE_IGNORE_PATH=/usr/include;/usr/lib/x86_64-linux-gnu;/usr/lib;"
        "/usr/local/include;/usr/local/lib",
    )
    assert r.returncode != 0
    assert "apt-get install liblz4-dev" in r.stderr or "apt-get install libzstd-dev" in r.stderr
    assert r.stderr.count("CMake Error") == 1  # one clear error, not a cascade


LAYERS = ["common", "kernels", "codecs", "transport", "collectives", "engine"]


def copy_tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in ("CMakeLists.txt", "pyproject.toml"):
        shutil.copy(os.path.join(ROOT, f), src / f)
    for d in ("cmake", "csrc"):
        shutil.copytree(os.path.join(ROOT, d), src / d)
    return src


@pytest.mark.parametrize(
    "lower, upper_header",
    [("transport", "engine.h"), ("common", "reduce.h"), ("kernels", "lossless.h")],
)
def test_configure_refuses_a_lower_layer_including_a_higher_one(tmp_path, lower, upper_header):
    src = copy_tree(tmp_path)
    victim = sorted((src / "csrc" / lower).rglob("*.cc"))[0]
    victim.write_text(f'#include "ringpress/{upper_header}"\n' + victim.read_text())
    r = subprocess.run(
        [CMAKE, "-S", str(src), "-B", str(tmp_path / "b"), "-DRINGPRESS_CUDA=OFF"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert "layer violation" in r.stderr
    assert victim.name in r.stderr and f"ringpress/{upper_header}" in r.stderr


def test_configure_refuses_a_relative_include_into_another_layer(tmp_path):
    src = copy_tree(tmp_path)
    victim = src / "csrc" / "collectives" / "ring.cc"
    victim.write_text('#include "../transport/net.h"\n' + victim.read_text())
    r = subprocess.run(
        [
            CMAKE,
            f"-DRP_CSRC={src / 'csrc'}",
            f"-DRP_LAYERS={';'.join(LAYERS)}",
            "-P",
            os.path.join(ROOT, "cmake", "RingpressLayers.cmake"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "ring.cc (layer collectives)" in r.stderr and "outside its layer's directory" in r.stderr


def test_the_source_tree_respects_its_layers():
    r = subprocess.run(
        [
            CMAKE,
            f"-DRP_CSRC={os.path.join(ROOT, 'csrc')}",
            f"-DRP_LAYERS={';'.join(LAYERS)}",
            "-P",
            os.path.join(ROOT, "cmake", "RingpressLayers.cmake"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
