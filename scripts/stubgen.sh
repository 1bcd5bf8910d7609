#!/usr/bin/env bash
# Regenerate the type stub of the native module (python/ringpress/_core/*.pyi) from the installed
# build, after changing a binding. scripts/test.sh checks it with mypy's stubtest, so a binding
# changed without this fails the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RP_VENV:-.venv}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd "$out" && "$OLDPWD/$VENV/bin/pybind11-stubgen" ringpress._core -o "$out" >/dev/null)
sed -i '/^__all__: list\[str\]/d' "$out"/ringpress/_core/*.pyi   # pybind11 modules have no __all__
mkdir -p python/ringpress/_core
cp "$out"/ringpress/_core/*.pyi python/ringpress/_core/
"$VENV/bin/ruff" check -q --fix python/ringpress/_core
"$VENV/bin/ruff" format -q python/ringpress/_core
echo "stubgen: wrote $(ls python/ringpress/_core/*.pyi | tr '\n' ' ')"
