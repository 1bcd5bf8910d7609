#!/usr/bin/env bash
# C++ tests under sanitizers (part of the test command):
#   build/asan  AddressSanitizer + UndefinedBehaviorSanitizer, every C++ test
#   build/tsan  ThreadSanitizer, the tests that run the worker pool (threads > 1)
# Findings fail the run (UBSan does not recover; ASan/TSan abort on the first report).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RP_VENV:-.venv}"
CMAKE="$VENV/bin/cmake"; [[ -x "$CMAKE" ]] || CMAKE=cmake
GEN=(); [[ -x "$VENV/bin/ninja" ]] && GEN=(-G Ninja -DCMAKE_MAKE_PROGRAM="$PWD/$VENV/bin/ninja")

build() {  # dir sanitize
  "$CMAKE" -S . -B "$1" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGPRESS_SANITIZE="$2" \
    -DRINGPRESS_BUILD_TESTS=ON -DRINGPRESS_CUDA=OFF -DRINGPRESS_PYTHON=OFF \
    -DCMAKE_CXX_FLAGS="-fno-sanitize-recover=undefined" >"$1.configure.log" 2>&1 \
    || { cat "$1.configure.log"; exit 1; }
  "$CMAKE" --build "$1" -j2 >"$1.build.log" 2>&1 || { tail -40 "$1.build.log"; exit 1; }
}

echo "sanitize: ASan + UBSan (all C++ tests)"
build build/asan "address,undefined"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j2 | tail -3

echo "sanitize: TSan (worker pool, multi-threaded codecs, store, engine and transports)"
build build/tsan "thread"
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build/tsan --output-on-failure -j2 -R "ThreadPool|Lossless|Quantize|Store|Comm" | tail -3
