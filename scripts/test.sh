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
  python/ringpress/torch/native.py python/ringpress/torch/hooks.py python/ringpress/horovod/*.py

step "C++ tests (ctest)"
ctest --test-dir build/py --output-on-failure -j2

step "C++ tests under ASan+UBSan and TSan"
bash scripts/sanitize.sh

step "fuzz (decoder, bounded)"
bash scripts/fuzz.sh

step "Python tests (pytest)"
# Run from the tests directory so the installed package, not the source tree, is imported.
python -m pytest -q -m "not slow" --durations=15 "$@"

step "soak (4 ranks, random collectives + codecs, bounded)"
bash scripts/soak.sh

step "wheel check"
bash scripts/check_wheel.sh
