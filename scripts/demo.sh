#!/usr/bin/env bash
# The demo: install if needed, then run the default backend (TwinLiteNet, bundled weights) on
# generated synthetic frames; overlays and a summary go to demo_output/. Extra arguments go to
# `panoptic-perception demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/panoptic-perception demo --output demo_output "$@"
