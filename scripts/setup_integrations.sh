#!/usr/bin/env bash
# Install what the integration tests (tests/python/test_ray_train.py, test_spark.py) run against:
# Ray Train, PySpark and a Java runtime for Spark. None of them is a ringpress dependency; they
# are the platforms ringpress is tested on. Idempotent: a stamp in the venv skips the install
# when this file is unchanged. It never fails the build: when something cannot be installed it
# says what and why, and the tests that need it skip with that reason.
#
#   scripts/setup_integrations.sh            into .venv
#   RP_VENV=/path scripts/setup_integrations.sh
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${RP_VENV:-.venv}"

# Java for Spark (pyspark 4 needs 17 or newer): Debian's headless runtime, as root or through sudo.
if ! command -v java >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo -n"
  echo "setup_integrations: installing default-jre-headless (Java for Spark)"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    default-jre-headless >/dev/null 2>&1 ||
    echo "setup_integrations: could not install default-jre-headless: the Spark test will skip" >&2
fi

# Pinned: the versions the tests were written against. pandas < 3: pyspark 4.3 warns that it
# does not support pandas 3 yet (TorchDistributor's barrier tasks use pandas and pyarrow).
PKGS=("ray[train]==2.60.0" "pyspark==4.3.0" "pandas>=2.2,<3")
stamp="$VENV/.ringpress-integrations-$(sha256sum "$0" | cut -c1-16)"
if [[ -f "$stamp" ]]; then
  exit 0
fi
echo "setup_integrations: installing ${PKGS[*]} into $VENV (test-only; several hundred MB)"
if "$VENV/bin/python" -m pip install -q "${PKGS[@]}"; then
  touch "$stamp"
else
  echo "setup_integrations: pip could not install ${PKGS[*]}: the Ray and Spark tests will skip" >&2
fi
exit 0
