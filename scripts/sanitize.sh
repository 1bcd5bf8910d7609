#!/usr/bin/env bash
# C++ tests under sanitizers (part of the test command):
#   build/asan  AddressSanitizer + UndefinedBehaviorSanitizer, every C++ test; then the extension
#               built the same way runs the Python tests that feed hostile bytes to the decoders
#               and drive the transports and engine with real rank processes
#   build/tsan  ThreadSanitizer, the tests that run the worker pool (threads > 1)
# Findings fail the run (UBSan does not recover; ASan/TSan abort on the first report).
#
#   scripts/sanitize.sh         build both trees, then run the tests
#   scripts/sanitize.sh build   only build them (scripts/test.sh builds them in the background
#                               while pytest runs, at idle CPU priority)
#   scripts/sanitize.sh test    only run the tests (the trees must be built)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
[[ "$what" =~ ^(all|build|test)$ ]] || { echo "usage: $0 [build|test]" >&2; exit 2; }
VENV="${RP_VENV:-.venv}"
CMAKE="$VENV/bin/cmake"; [[ -x "$CMAKE" ]] || CMAKE=cmake
GEN=(); [[ -x "$VENV/bin/ninja" ]] && GEN=(-G Ninja -DCMAKE_MAKE_PROGRAM="$PWD/$VENV/bin/ninja")

quiet() {  # log-file command...: the summary when it passes, the whole output when it fails
  local log=$1
  shift
  "$@" >"$log" 2>&1 || { cat "$log"; echo "sanitize: FAILED: $*"; exit 1; }
  tail -3 "$log"
}

build() {  # dir sanitize [more cmake arguments]
  local dir=$1 san=$2
  shift 2
  "$CMAKE" -S . -B "$dir" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGPRESS_SANITIZE="$san" \
    -DRINGPRESS_BUILD_TESTS=ON -DRINGPRESS_CUDA=OFF -DRINGPRESS_PYTHON=OFF "$@" \
    -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=undefined" >"$dir.configure.log" 2>&1 \
    || { cat "$dir.configure.log"; exit 1; }
  "$CMAKE" --build "$dir" -j2 >"$dir.build.log" 2>&1 || { tail -40 "$dir.build.log"; exit 1; }
}

PY="$PWD/$VENV/bin/python"
# The TSan tree runs the tests whose names match this; it builds only the test files that define
# them (the other files' compile time saved; checked below against the ASan tree, which builds all).
TSAN_TESTS="ThreadPool|Lossless|Quantize|Store|Comm"
tsan_files() {  # the tests/cpp files with a suite or test whose name matches TSAN_TESTS
  grep -lE "^(TEST(_F|_P)?|INSTANTIATE_TEST_SUITE_P|TYPED_TEST(_P)?)\(.*($TSAN_TESTS)" tests/cpp/test_*.cc |
    xargs -n1 basename | sed 's/\.cc$//' | paste -sd';'
}

if [[ "$what" != test ]]; then
  echo "sanitize: building build/asan (ASan + UBSan, every C++ test and the extension)"
  build build/asan "address,undefined" -DRINGPRESS_PYTHON=ON -DRINGPRESS_TORCH=OFF -DPython_EXECUTABLE="$PY" \
    -Dpybind11_DIR="$("$PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')"
  echo "sanitize: building build/tsan (TSan, the test files of $TSAN_TESTS)"
  build build/tsan "thread" -DRP_CPP_TEST_FILES="$(tsan_files)"
fi
[[ "$what" == build ]] && exit 0

echo "sanitize: ASan + UBSan (all C++ tests)"
quiet build/asan.ctest.log env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --test-dir build/asan --output-on-failure -j2

echo "sanitize: ASan + UBSan (Python: hostile frames and payloads, collectives, faults)"
# The sanitized extension in a package tree of its own, ahead of the installed one on the path.
# The interpreter is not instrumented, so the runtime is preloaded, with libstdc++ (ASan's
# __cxa_throw interceptor must find it at start); leak checks off: CPython and torch keep memory
# until exit by design. Rank processes inherit the environment. Left out: the fd/RSS growth test
# (ASan's quarantine holds freed memory by design), and the 5-rank collective matrix (2 to 4 ranks
# cover the same code under ASan; the plain pytest step runs 5; CI's 25-minute budget).
pkg=build/asan/pypkg
rm -rf "$pkg" && mkdir -p "$pkg" && cp -r python/ringpress "$pkg/" && cp build/asan/_core*.so "$pkg/ringpress/"
CXX_BIN="${CXX:-c++}"
asan_env=(env PYTHONPATH="$PWD/$pkg"
  LD_PRELOAD="$("$CXX_BIN" -print-file-name=libasan.so) $("$CXX_BIN" -print-file-name=libstdc++.so)"
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
"${asan_env[@]}" "$PY" -c "import ringpress; assert '/pypkg/' in ringpress.__file__, ringpress.__file__"
quiet build/asan.pytest.log "${asan_env[@]}" "$PY" -m pytest -q -rfE -p no:cacheprovider -x \
  tests/python/test_wire_format.py tests/python/test_comm_compressed.py tests/python/test_comm_faults.py \
  "tests/python/test_comm.py::test_collectives_match_numpy" -k "not many_mixed_ops and not 5-tcp and not 5-shm"

echo "sanitize: TSan (worker pool, multi-threaded codecs, store, engine and transports)"
# The TSan tree must hold every test of the ASan tree (all files) that TSAN_TESTS selects.
names() { ctest --test-dir "$1" -N -R "$TSAN_TESTS" | sed -nE 's/^ *Test +#[0-9]+: //p' | sort; }
if ! diff <(names build/asan) <(names build/tsan) >build/tsan.names.diff; then
  cat build/tsan.names.diff
  echo "sanitize: FAILED: build/tsan lacks tests that match $TSAN_TESTS (< above; its files: $(tsan_files))"
  exit 1
fi
quiet build/tsan.ctest.log env TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build/tsan --output-on-failure -j2 -R "$TSAN_TESTS"
