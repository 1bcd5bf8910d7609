#!/usr/bin/env bash
# Fuzz the frame decoder for a bounded time (libFuzzer + ASan/UBSan); part of scripts/test.sh.
#
#   scripts/fuzz.sh                       build build/fuzz, replay the regression corpus, fuzz the
#                                         decoder 40 s and the transport parsers 20 s (CI budget: 25 min in all)
#   RP_FUZZ_TRANSPORT_SECONDS=120 ...     fuzz the transport parsers longer
#   RP_FUZZ_STORE_SECONDS=120 ...         fuzz the store's request parser and handshake longer (15 s)
#   RP_FUZZ_SECONDS=300 scripts/fuzz.sh   fuzz longer
#   scripts/fuzz.sh FILE...               only replay the given inputs (reproduce a crash)
#   RP_FUZZ_BUILD_ONLY=1 scripts/fuzz.sh  only build (scripts/test.sh builds while pytest runs)
#
# With two cores or more, the transport parsers and the store protocol are fuzzed (one after the
# other) while the decoder is: each fuzzer is one process on a core of its own, so each gets the
# same fuzzing time as when they ran one after another, and the step takes 40 s instead of 75.
#
# Steps: configure + build the fuzz_decode target with clang (build/fuzz, RINGPRESS_FUZZ=ON,
# RINGPRESS_SANITIZE=address,undefined); run every input of tests/fuzz/corpus/ and
# tests/golden/*.rpz once (goldens must also decode); then fuzz with a scratch corpus in
# build/fuzz/corpus seeded from both, and replay that corpus with the generic/SSE2/AVX2 shuffle
# kernels (RINGPRESS_SIMD). The decoder runs with -malloc_limit_mb=512: a decoder allocating for a
# hostile size claim (inputs claim up to 2^64 - 1) is an OOM finding. A finding (crash, sanitizer
# report, leak, timeout, OOM) fails
# the script, and its input is copied into tests/fuzz/corpus/, the regression corpus, to commit.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RP_VENV:-.venv}"
[[ -d "$VENV/bin" ]] && export PATH="$PWD/$VENV/bin:$PATH"   # its cmake and ninja come first

SECONDS_BUDGET="${RP_FUZZ_SECONDS:-40}"
BUILD=build/fuzz
REGRESS=tests/fuzz/corpus
SCRATCH="$BUILD/corpus"
ART="$BUILD/artifacts"
JOBS="$(nproc 2>/dev/null || echo 2)"

# ---------------------------------------------------------------- toolchain
pkgs="clang libclang-rt-14-dev"
if ! command -v clang >/dev/null 2>&1 || ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang not found; libFuzzer needs it. Install:  apt-get install $pkgs" \
       "  (scripts/setup.sh installs them)" >&2
  exit 1
fi
probe="$(mktemp -d)"
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
  > "$probe/p.cc"
if ! clang++ -fsanitize=fuzzer,address,undefined "$probe/p.cc" -o "$probe/p" 2>"$probe/err"; then
  cat "$probe/err" >&2
  echo "fuzz: clang cannot link libFuzzer/ASan (the compiler-rt runtime is missing)." \
       "Install:  apt-get install $pkgs  (scripts/setup.sh installs them)" >&2
  rm -rf "$probe"
  exit 1
fi
rm -rf "$probe"
command -v cmake >/dev/null 2>&1 || { echo "fuzz: cmake not found (run scripts/setup.sh)" >&2; exit 1; }
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)

# ---------------------------------------------------------------- build
echo "fuzz: building fuzz_decode in $BUILD"
if [[ -f "$BUILD/CMakeCache.txt" ]] && ! grep -q "^CMAKE_GENERATOR:INTERNAL=${gen[1]:-Unix Makefiles}\$" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"   # the generator changed
fi
CC=clang CXX=clang++ cmake -S . -B "$BUILD" "${gen[@]}" --log-level=WARNING \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRINGPRESS_FUZZ=ON -DRINGPRESS_CUDA=OFF -DRINGPRESS_PYTHON=OFF -DRINGPRESS_BUILD_TESTS=OFF \
  -DRINGPRESS_SANITIZE=address,undefined >/dev/null
cmake --build "$BUILD" --target fuzz_decode fuzz_transport fuzz_store -j "$JOBS"
FUZZER="$BUILD/tests/fuzz/fuzz_decode"
[[ "${RP_FUZZ_BUILD_ONLY:-0}" == 1 ]] && exit 0

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"   # UB aborts (-fno-sanitize-recover)

regress_inputs() { find "$REGRESS" -maxdepth 1 -type f ! -name 'README*' | sort; }

# ---------------------------------------------------------------- replay only (arguments)
if [[ $# -gt 0 ]]; then
  exec "$FUZZER" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 "$@"
fi

# ---------------------------------------------------------------- regression corpus + goldens
echo "fuzz: replaying the regression corpus and the golden frames"
mapfile -t regress < <(regress_inputs)
if [[ ${#regress[@]} -gt 0 ]]; then
  "$FUZZER" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 "${regress[@]}" 2>"$BUILD/regress.log" || {
    cat "$BUILD/regress.log" >&2
    echo "fuzz: FAILED: an input of the regression corpus ($REGRESS) still fails (log above)" >&2
    exit 1
  }
fi
"$FUZZER" --expect-valid -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 tests/golden/*.rpz \
  2>"$BUILD/golden.log" || {
  cat "$BUILD/golden.log" >&2
  echo "fuzz: FAILED: a golden frame (tests/golden/) no longer decodes cleanly (log above)" >&2
  exit 1
}
echo "fuzz: ${#regress[@]} regression inputs and $(ls tests/golden/*.rpz | wc -l) golden frames ok"

# ---------------------------------------------------------------- transport parsers, store protocol
T_SECONDS="${RP_FUZZ_TRANSPORT_SECONDS:-20}"
S_SECONDS="${RP_FUZZ_STORE_SECONDS:-15}"
fuzz_other() {  # label target regress-dir seconds: fuzz one more target from its regression corpus
  local label=$1 name=$2 regress=$3 secs=$4 rc=0
  local fuzzer="$BUILD/tests/fuzz/$name" scratch="$BUILD/corpus_${name#fuzz_}"
  local art="$BUILD/artifacts_${name#fuzz_}" log="$BUILD/$name.log"
  mkdir -p "$scratch"
  rm -rf "$art" && mkdir -p "$art"
  cp -f "$regress"/* "$scratch"/ 2>/dev/null || true
  echo "fuzz: $label for ${secs}s (log $log)"
  "$fuzzer" -max_total_time="$secs" -max_len=8192 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$art/" -print_final_stats=1 "$scratch" >"$log" 2>&1 || rc=$?
  local found=("$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-*)
  if [[ $rc -ne 0 || ${#found[@]} -gt 0 ]]; then
    tail -60 "$log" >&2
    for f in "${found[@]}"; do cp -f "$f" "$regress"/; done
    echo "fuzz: FAILED: the fuzzer found a problem in the $label (exit $rc);" \
         "inputs added to $regress/; reproduce with: $fuzzer <input>" >&2
    return 1
  fi
}
others() {
  fuzz_other "transport parsers" fuzz_transport tests/fuzz/corpus_transport "$T_SECONDS" &&
    fuzz_other "store protocol" fuzz_store tests/fuzz/corpus_store "$S_SECONDS"
}
shopt -s nullglob
others_pid=""
if [[ "$JOBS" -ge 2 ]]; then
  others >"$BUILD/fuzz_others.out" 2>&1 &
  others_pid=$!
fi
others_done() {  # wait for the background fuzzers (if any) and show what they said
  local rc=0
  [[ -n "$others_pid" ]] || return 0
  wait "$others_pid" || rc=$?
  others_pid=""
  cat "$BUILD/fuzz_others.out"
  return $rc
}

# ---------------------------------------------------------------- bounded fuzzing
mkdir -p "$SCRATCH"
rm -rf "$ART" && mkdir -p "$ART"
cp -f tests/golden/*.rpz "$SCRATCH"/
for f in "${regress[@]}"; do cp -f "$f" "$SCRATCH"/; done
echo "fuzz: fuzzing for ${SECONDS_BUDGET}s (corpus $SCRATCH, log $BUILD/fuzz.log)"
rc=0
"$FUZZER" -max_total_time="$SECONDS_BUDGET" -max_len=65536 -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
  -dict=tests/fuzz/fuzz_decode.dict -artifact_prefix="$ART/" -print_final_stats=1 \
  "$SCRATCH" >"$BUILD/fuzz.log" 2>&1 || rc=$?
grep -E '^#[0-9]+ +(DONE|pulse)|^stat::' "$BUILD/fuzz.log" | tail -8 || true
# The run above exercised this CPU's best shuffle kernels only; replay the corpus it grew through
# the others too (RINGPRESS_SIMD caps the runtime dispatch; a level the CPU lacks is skipped).
if [[ $rc -eq 0 ]]; then
  for level in generic sse2 avx2; do
    RINGPRESS_SIMD=$level "$FUZZER" -runs=0 -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -artifact_prefix="$ART/" \
      "$SCRATCH" >>"$BUILD/fuzz.log" 2>&1 || { rc=$?; echo "fuzz: replay with RINGPRESS_SIMD=$level failed" >&2; break; }
  done
  [[ $rc -eq 0 ]] && echo "fuzz: corpus replayed with RINGPRESS_SIMD=generic, sse2, avx2"
fi

found=("$ART"/crash-* "$ART"/leak-* "$ART"/timeout-* "$ART"/oom-*)
if [[ $rc -ne 0 || ${#found[@]} -gt 0 ]]; then
  tail -60 "$BUILD/fuzz.log" >&2
  for f in "${found[@]}"; do cp -f "$f" "$REGRESS"/; done
  echo "fuzz: FAILED: the fuzzer found a problem in the decoder (exit $rc; log $BUILD/fuzz.log)." >&2
  others_done || true
  if [[ ${#found[@]} -gt 0 ]]; then
    echo "fuzz: added to the regression corpus $REGRESS/ (commit them with the fix):" >&2
    for f in "${found[@]}"; do echo "    $REGRESS/$(basename "$f")" >&2; done
    echo "fuzz: reproduce with:  bash scripts/fuzz.sh $REGRESS/$(basename "${found[0]}")" >&2
  fi
  exit 1
fi
echo "fuzz: decoder ok (no findings in ${SECONDS_BUDGET}s)"


rc=0
if [[ -n "$others_pid" ]]; then others_done || rc=$?; else others || rc=$?; fi
[[ $rc -eq 0 ]] || exit 1
echo "fuzz: ok (decoder ${SECONDS_BUDGET}s, transport parsers ${T_SECONDS}s, store protocol ${S_SECONDS}s, no findings)"
