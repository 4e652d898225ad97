#!/usr/bin/env bash
# README command 1: install what is missing, build what the demo needs, and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/install_deps.sh
bash scripts/build.sh --python
PY=${PYTHON:-python3}
# The demo: Fashion-MNIST float -> PTQ (4 methods) -> QAT -> QDQ ONNX -> ONNX Runtime, one table
# and a plot in ./torchqat_demo_out (options: --help).
echo "== running the demo (python -m torchqat.demo: train or reuse the float model, PTQ, QAT, export, ONNX Runtime)"
$PY -m torchqat.demo "$@"
echo "== done in $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
