#!/usr/bin/env bash
# README command 2: install what is missing, build, run every test (C++, Python, the wheel, then the
# C++ tests again under ASan + UBSan and the fuzzer: scripts/run_sanitizers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
PY=${PYTHON:-python3}
echo "== C++ tests (Catch2 via ctest)"
(cd build && ctest --output-on-failure -j "$(nproc)")
# Fails when a ctest entry ran no Catch test case or the entries differ from the binary's test list.
$PY scripts/check_ctest.py build
echo "== Python tests (pytest)"
# Run from tests/ so the installed package (not ./python) is what gets imported.
(cd tests/python && $PY -m pytest -q -p no:cacheprovider .)
echo "== The wheel (built, installed into a fresh venv, imported; a C++ program built against it)"
bash scripts/check_wheel.sh
echo "== Sanitizers and fuzzer"
bash scripts/run_sanitizers.sh
