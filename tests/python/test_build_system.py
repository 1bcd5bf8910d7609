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
