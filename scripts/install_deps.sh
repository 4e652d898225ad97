#!/usr/bin/env bash
# Installs what torchqat needs on a fresh Debian 12 machine and is quick when all is present:
# Debian's build deps and the Fashion-MNIST data, and the pinned torch wheel (CUDA 13.0 build,
# matching the nvcc 13 toolkit) with the Python test/export deps.
set -euo pipefail
APT_PKGS=(cmake g++ catch2 libfmt-dev libeigen3-dev pybind11-dev libprotobuf-dev libonnx-dev protobuf-compiler
          zlib1g-dev dataset-fashion-mnist clang-14 libclang-rt-14-dev)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
PY=${PYTHON:-python3}
if ! $PY - <<'PYEOF' >/dev/null 2>&1
import importlib, sys
import torch
assert torch.__version__.startswith("2.11.0"), torch.__version__
for m in ("numpy", "pytest", "onnx", "onnxruntime", "tqdm", "matplotlib", "setuptools", "wheel", "pybind11"):
    importlib.import_module(m)
PYEOF
then
  $PY -m pip install --quiet --disable-pip-version-check -r requirements.txt
fi
