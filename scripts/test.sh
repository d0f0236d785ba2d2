#!/usr/bin/env bash
# Run the whole test suite (installs everything it needs first). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --ros
exec .venv/bin/python -m pytest "$@"
