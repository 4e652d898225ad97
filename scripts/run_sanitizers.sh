#!/usr/bin/env bash
# One clang build (CPU, ASan + UBSan, in build-san) serves two checks: the C++ tests run under
# the sanitizers, then the libFuzzer harness on the operator / quantizer / calibrator boundary
# runs for a bounded time. Any sanitizer report or fuzzer crash fails the script.
#   TORCHQAT_FUZZ_SECONDS (default 60)   how long the fuzzer runs
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
JOBS=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
# libtorch is not instrumented: its process-lifetime caches would read as leaks, so leak
# checking is off; every other ASan/UBSan finding aborts the run. OpenMP is off here: clang would
# bring a second runtime (libomp) next to the libgomp torch loads.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

cmake -S . -B build-san -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="${CXX_FUZZ:-clang++-14}" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DTORCHQAT_SANITIZE=ON -DTORCHQAT_BUILD_FUZZER=ON -DTORCHQAT_OPENMP=OFF \
  -DTORCHQAT_USE_CUDA=OFF -DTORCHQAT_BUILD_PYTHON=OFF -DTORCHQAT_BUILD_TESTS=ON -DCMAKE_PREFIX_PATH="$PREFIX" \
  >build-san.log
cmake --build build-san --target torchqat_tests torchqat_fuzz_ops -j "$JOBS"

echo "== C++ tests under ASan + UBSan"
./build-san/tests/cpp/torchqat_tests

echo "== libFuzzer, ${TORCHQAT_FUZZ_SECONDS:-60} s"
mkdir -p build-san/corpus
./build-san/tests/fuzz/torchqat_fuzz_ops -max_total_time="${TORCHQAT_FUZZ_SECONDS:-60}" -max_len=256 \
  -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix=build-san/ build-san/corpus
