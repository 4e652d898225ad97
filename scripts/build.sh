#!/usr/bin/env bash
# Builds libtorchqat, the Python extension and the C++ tests in ./build (incremental), and
# installs the Python package from it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
$PY -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps .
cmake --build build -j "$CMAKE_BUILD_PARALLEL_LEVEL"
