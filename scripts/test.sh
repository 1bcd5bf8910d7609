#!/usr/bin/env bash
# The test command (README's second command, and CI's): lint, C++ tests (plain and sanitized),
# fuzzing (bounded), Python tests (incl. the fault matrix), soak (bounded), wheel check.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RP_VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"
T0=$(date +%s)
step() { echo "== $* [at $(($(date +%s) - T0)) s]"; }

step "lint (ruff, clang-format)"
ruff check python tests bench
ruff format --check python tests bench
find csrc tests/cpp tests/fuzz \( -name '*.cc' -o -name '*.h' -o -name '*.cu' \) -print0 |
  xargs -0 clang-format --dry-run --Werror

step "types (the _core stub against the built module; the modules that call it)"
# Run outside the source tree so the installed package (with its extension) is the one checked.
(cd build && python -m mypy.stubtest ringpress._core --allowlist ../tests/stubtest_allowlist.txt)
python -m mypy --ignore-missing-imports --follow-imports=silent --python-version 3.10 \
  python/ringpress/__init__.py python/ringpress/comm.py python/ringpress/codecs.py \
  python/ringpress/compressors.py python/ringpress/errors.py python/ringpress/torch/__init__.py \
  python/ringpress/torch/native.py python/ringpress/torch/hooks.py python/ringpress/torch/elastic.py \
  python/ringpress/horovod/*.py python/ringpress/ray.py

step "C++ tests (ctest)"
ctest --test-dir build/py --output-on-failure -j2

# The sanitizer trees, the fuzzers and the wheel build in the background while pytest runs, at
# idle CPU priority (SCHED_IDLE: they get a core only when no other process wants it). pytest's rank
# processes wait on each other and leave about one core of two idle; the builds take that time,
# not the tests' (whose timing assertions hold even beside two busy loops at normal priority:
# docs/building.md). Each build's log: build/background/*.log.
BG=build/background
rm -rf "$BG" && mkdir -p "$BG"
idle=(nice -n 19)
chrt --idle 0 true 2>/dev/null && idle=(chrt --idle 0)
bg_stage() {  # name command...: run it, its output in $BG/name.log, its exit status in $BG/name.rc
  local name=$1 rc=0
  shift
  "$@" >"$BG/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$BG/$name.rc"
}
bg_wait() {  # name: wait for a background stage; its log's tail, or all of it when it failed
  local name=$1 t=$SECONDS
  while [[ ! -f "$BG/$name.rc" ]] && kill -0 "$bg_pid" 2>/dev/null; do sleep 1; done
  [[ -f "$BG/$name.rc" ]] && [[ "$(cat "$BG/$name.rc")" == 0 ]] || {
    cat "$BG/$name.log"
    echo "test: FAILED: the background build '$name' (log $BG/$name.log)"
    exit 1
  }
  tail -2 "$BG/$name.log"
  echo "(waited $((SECONDS - t)) s for it)"
}
step "sanitizer, fuzz and wheel builds start (background, idle priority)"
set -m  # the background job in a process group of its own, so that an early exit can end it all
(
  bg_stage sanitize "${idle[@]}" bash scripts/sanitize.sh build
  bg_stage fuzz env RP_FUZZ_BUILD_ONLY=1 "${idle[@]}" bash scripts/fuzz.sh
  bg_stage wheel env RP_WHEEL_BUILD_ONLY=1 RP_WHEEL_DIST="$BG/wheel-dist" "${idle[@]}" \
    bash scripts/check_wheel.sh
) </dev/null &
bg_pid=$!
set +m
trap 'kill -- "-$bg_pid" 2>/dev/null || true' EXIT

step "integration packages (Ray Train, PySpark, Java; test-only, skipped when unchanged)"
bash scripts/setup_integrations.sh

step "Python tests (pytest)"
# Run from the tests directory so the installed package, not the source tree, is imported.
python -m pytest -q -m "not slow" --durations=15 "$@"

step "C++ tests under ASan+UBSan and TSan"
bg_wait sanitize
bash scripts/sanitize.sh test

step "fuzz (decoder, bounded)"
bg_wait fuzz
bash scripts/fuzz.sh

step "soak (4 ranks, random collectives + codecs, bounded)"
bash scripts/soak.sh

step "wheel check"
bg_wait wheel
RP_WHEEL_DIST="$BG/wheel-dist" bash scripts/check_wheel.sh
