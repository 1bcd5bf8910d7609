#!/usr/bin/env bash
# Build and install ringpress into the venv (incremental: the CMake build tree is kept in build/py).
# The C++ tests are built in the same tree (ctest --test-dir build/py runs them).
# Then the benchmarks, their own pure-Python package beside the runtime (bench/pyproject.toml,
# `ringpress bench ...`; the tests run them too); they never go into the runtime's wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RP_VENV:-.venv}"
"$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps \
  -Cbuild-dir=build/py \
  -Ccmake.define.RINGPRESS_BUILD_TESTS=ON \
  ${RP_CMAKE_ARGS:+-Ccmake.args="$RP_CMAKE_ARGS"} \
  .
"$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps ./bench
"$VENV/bin/python" -c "import ringpress; print('build: ringpress', ringpress.__version__, 'simd', ringpress.build_info()['simd'], 'cuda', ringpress.build_info()['cuda'])"
