#!/usr/bin/env bash
# Soak test (tests/python/test_soak.py): 4 ranks, random collectives and codecs for a bounded
# time, results checked, RSS and fd counts stable. Part of scripts/test.sh with a short budget.
#
#   scripts/soak.sh                      30 s (CI budget: 25 min in all)
#   RP_SOAK_SECONDS=600 scripts/soak.sh  longer
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RP_VENV:-.venv}"
export RP_SOAK_SECONDS="${RP_SOAK_SECONDS:-30}"
echo "soak: 4 ranks for ${RP_SOAK_SECONDS}s"
"$VENV/bin/python" -m pytest -q -m slow tests/python/test_soak.py -p no:cacheprovider
