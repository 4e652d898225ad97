#!/usr/bin/env bash
# One clang build (CPU, ASan + UBSan, in build-san) serves two checks: the C++ tests run under
# the sanitizers, then the libFuzzer harness on the operator / quantizer / calibrator boundary
# runs for a bounded time. Any sanitizer report or fuzzer crash fails the script.
# The fuzzer starts from tests/fuzz/regressions (inputs that once broke an invariant) and
# mutates with a fixed seed for a fixed number of inputs, so runs stay close to one another
# (coverage from torch's own threads can still steer them apart a little). Set another seed to
# explore further; add any input that breaks an invariant to tests/fuzz/regressions once fixed.
#   TORCHQAT_FUZZ_RUNS    (default 100000) how many inputs the fuzzer tries
#   TORCHQAT_FUZZ_SECONDS (default 150)    a time cap on top (a slow machine stops earlier)
#   TORCHQAT_FUZZ_SEED    (default 1)      libFuzzer's -seed
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

echo "== libFuzzer, ${TORCHQAT_FUZZ_RUNS:-100000} runs (at most ${TORCHQAT_FUZZ_SECONDS:-150} s), seed ${TORCHQAT_FUZZ_SEED:-1}"
# A fresh corpus each run: inputs kept from an earlier run would make the sequence depend on it.
rm -rf build-san/corpus && mkdir -p build-san/corpus
./build-san/tests/fuzz/torchqat_fuzz_ops -runs="${TORCHQAT_FUZZ_RUNS:-100000}" -max_total_time="${TORCHQAT_FUZZ_SECONDS:-150}" -seed="${TORCHQAT_FUZZ_SEED:-1}" \
  -max_len=256 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix=build-san/ build-san/corpus tests/fuzz/regressions
