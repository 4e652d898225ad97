#!/usr/bin/env bash
# Builds in ./build (incremental) and installs the Python package from it.
#   scripts/build.sh          libtorchqat, the Python extension, the C++ tests and examples
#   scripts/build.sh --python libtorchqat and the Python extension only (what the demo needs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
targets=()
[ "${1:-}" = "--python" ] && targets=(--target torchqat torchqat_python)
n_src=$(find csrc -name '*.cpp' -o -name '*.cu' | wc -l)
echo "== configuring (cmake, ./build)"
cfg=(-DPython3_EXECUTABLE="$($PY -c 'import sys; print(sys.executable)')"
     -DCMAKE_BUILD_TYPE="${TORCHQAT_BUILD_TYPE:-Release}" -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_INSTALL_INCLUDEDIR=include)
[ -n "${TORCHQAT_USE_CUDA:-}" ] && cfg+=(-DTORCHQAT_USE_CUDA="$TORCHQAT_USE_CUDA")
mkdir -p build
if ! cmake -S . -B build "${cfg[@]}" > build/configure.log 2>&1; then cat build/configure.log; exit 1; fi
grep -E '^-- torchqat' build/configure.log || true
if [ ${#targets[@]} -gt 0 ]; then
  echo "== building libtorchqat and the Python extension ($n_src core files, $CMAKE_BUILD_PARALLEL_LEVEL jobs)"
else
  echo "== building everything: libtorchqat, Python extension, C++ tests and examples ($CMAKE_BUILD_PARALLEL_LEVEL jobs)"
fi
cmake --build build "${targets[@]}" -j "$CMAKE_BUILD_PARALLEL_LEVEL"
echo "== installing the Python package (pip, from ./build)"
$PY -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps .
