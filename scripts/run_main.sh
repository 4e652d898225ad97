#!/usr/bin/env bash
# README command 1: install what is missing, build, and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
PY=${PYTHON:-python3}
# The demo: Fashion-MNIST float -> PTQ (4 methods) -> QAT -> QDQ ONNX -> ONNX Runtime, one table
# and a plot in ./torchqat_demo_out (options: --help).
$PY -m torchqat.demo "$@"
