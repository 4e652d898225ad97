#!/usr/bin/env bash
# Installs what torchqat needs on a fresh Debian 12 machine and is quick when all is present:
# Debian's build deps and the Fashion-MNIST data, and the pinned torch wheel (CUDA 13.0 build,
# matching the nvcc 13 toolkit) with the Python test/export deps.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PKGS=(cmake g++ catch2 libfmt-dev libeigen3-dev pybind11-dev libprotobuf-dev libonnx-dev protobuf-compiler
          zlib1g-dev dataset-fashion-mnist clang-14 libclang-rt-14-dev)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "== Debian packages: all present"
fi
PY=${PYTHON:-python3}
# Every module requirements.txt names, by its import name; the check is what decides whether pip runs.
if ! $PY - <<'PYEOF' >/dev/null 2>&1
import importlib
import torch
assert torch.__version__.startswith("2.11.0"), torch.__version__
for m in ("numpy", "pytest", "onnx", "onnxruntime", "onnxscript", "onnx_ir", "tqdm", "matplotlib", "setuptools", "wheel", "pybind11",
          "torchvision"):
    importlib.import_module(m)
PYEOF
then
  if $PY -c 'import torch, sys; sys.exit(not torch.__version__.startswith("2.11.0"))' >/dev/null 2>&1; then
    echo "== installing Python packages (requirements.txt)"
  else
    echo "== installing torch 2.11.0 (about 3 GB with its CUDA libraries) and the Python packages of requirements.txt"
  fi
  $PY -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt
else
  echo "== Python packages: all present (torch $($PY -c 'import torch; print(torch.__version__)'))"
fi
