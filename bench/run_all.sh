#!/usr/bin/env bash
# Runs every benchmark in one go on what this machine has (CPU, and CUDA when a GPU is visible) and
# prints their tables; about 40 s on a 2-core CPU. See bench/README.md for the columns.
#   bench/run_all.sh                      # TORCHQAT_LIB_DIR defaults to <repo>/build
#   OMP_NUM_THREADS=1 bench/run_all.sh    # CPU figures on one thread (steadier on a shared machine)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TORCHQAT_LIB_DIR="${TORCHQAT_LIB_DIR:-$root/build}"
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-python3}"

date -u +"%Y-%m-%d %H:%M UTC"
uptime  # the load average: other processes on the cores skew CPU figures
for bench in bench_fake_quant bench_calib bench_qat_step; do
  echo
  echo "=== bench/$bench.py ==="
  "$python" "$root/bench/$bench.py"
done
