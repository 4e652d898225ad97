#!/usr/bin/env bash
# README command 1: install what is missing, build, and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
PY=${PYTHON:-python3}
cd /tmp && $PY -m torchqat.weight_report "$@"
