#!/usr/bin/env bash
# Builds the wheel (from ./build), installs it with --no-deps into a fresh venv that sees the system's
# torch (as on a second machine with the same torch and no compiler), and checks from outside the
# checkout that it imports, computes, finds libtorchqat through its RPATH (inside the venv, not the
# build tree, no LD_LIBRARY_PATH) and that a C++ program builds against the package's CMake prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== wheel: building (pip wheel, from ./build)"
$PY -m pip wheel --quiet --disable-pip-version-check --no-build-isolation --no-deps . -w "$work/dist"
wheel=$(ls "$work"/dist/torchqat-*.whl)
echo "== wheel: installing $(basename "$wheel") into a fresh venv"
$PY -m venv --system-site-packages "$work/venv"
# --ignore-installed: the same version may already sit in the system site-packages the venv sees,
# and pip would then install nothing and the checks below would test that copy.
"$work/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --ignore-installed "$wheel"
cd "$work"
env -u LD_LIBRARY_PATH -u TORCHQAT_LIB_DIR "$work/venv/bin/python" - "$work/venv" <<'PYEOF'
import os, sys
import torch
import torchqat
from torchqat.__main__ import loaded_library
venv = os.path.realpath(sys.argv[1])
lib = os.path.realpath(loaded_library())
assert lib.startswith(venv), f"libtorchqat loaded from {lib}, not from the venv {venv}"
assert os.path.realpath(torchqat.__file__).startswith(venv), torchqat.__file__
x = torch.linspace(-1, 1, 9)
y = torch.ops.torchqat.fake_quant(x, torch.tensor(1.0))
ref = torch.fake_quantize_per_tensor_affine(x, 1 / 127, 0, -128, 127)
assert torch.equal(y, ref), (y, ref)
print("wheel: imports from the venv, libtorchqat at", lib)
PYEOF
"$work/venv/bin/python" -m torchqat
prefix=$("$work/venv/bin/python" -m torchqat --cmake-prefix-path)
torch_prefix=$("$work/venv/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
echo "== wheel: building a C++ program against the installed package (find_package(torchqat))"
cmake -S "$root/tests/cpp/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix;$torch_prefix" >/dev/null
cmake --build "$work/consumer" -j "$(nproc)" >/dev/null
"$work/consumer/consumer" >/dev/null
echo "wheel: all checks passed"
