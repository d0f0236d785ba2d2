#!/usr/bin/env bash
# Create .venv (Python >= 3.10) if needed and install the project with its pinned dependencies.
# Idempotent: reinstalls only when setup.py, constraints.txt or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "bootstrap: Python >= 3.10 is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
  "$PYTHON" -m venv .venv
fi

stamp=".venv/.installed-$(cat setup.py constraints.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing into .venv (first run takes a minute)"
  .venv/bin/python -m pip install --quiet -c constraints.txt torch
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
