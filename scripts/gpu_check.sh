#!/usr/bin/env bash
# One command for a GPU machine: builds torchqat with its CUDA kernels, runs every CUDA test (C++
# and Python), runs the benchmarks on the GPU, and writes everything to one results file.
#   scripts/gpu_check.sh [RESULTS_DIR]      # default: $OUT, else ./gpu_check_out
# Needs torch (a CUDA build) preinstalled in the python on PATH (or $PYTHON), nvcc of the same CUDA
# major, cmake, and no network: it installs with pip --no-build-isolation --no-deps. Budget: under 8
# minutes on an H100-class machine with 16 cores (each step below has its own timeout).
# Exits 1 when any step fails, 2 when there is no usable GPU (checked first, before building).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
out_dir="${1:-${OUT:-$root/gpu_check_out}}"
mkdir -p "$out_dir"
results="$out_dir/gpu_check_results.txt"
: > "$results"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
export TORCHQAT_USE_CUDA=ON  # a build that silently drops the kernels would test nothing
# nvcc compiles a file's architectures one after another unless told otherwise: in parallel, the
# .cu files stop being the build's long pole (read at the first configure of a build folder).
export CUDAFLAGS="${CUDAFLAGS:---threads=0}"
failed=()

log() { echo "$*" | tee -a "$results"; }
# The whole run stops within this many seconds: each step's limit is cut to what is left.
budget="${TORCHQAT_GPU_CHECK_BUDGET_S:-470}"
# step NAME TIMEOUT_S CMD...: runs CMD with its output in the results file; records a failure.
step() {
  local name="$1" limit="$2"
  shift 2
  local left=$((budget - SECONDS - 5))
  [ "$left" -lt "$limit" ] && limit=$left
  log ""
  if [ "$limit" -le 0 ]; then
    log "=== $name: not run, the ${budget} s budget is spent"
    failed+=("$name (out of time)")
    return 1
  fi
  log "=== $name ($(date -u +%H:%M:%S), limit ${limit}s) ==="
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$results"
  local rc=${PIPESTATUS[0]}
  log "--- $name: rc $rc, $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || failed+=("$name (rc $rc)")
  return "$rc"
}

log "torchqat gpu_check, $(date -u +'%Y-%m-%d %H:%M UTC'), $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo 'no git')"
log "host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. The environment, before anything is built.
if ! "$python" -c "import torch" 2>/dev/null; then
  log "gpu_check: FAIL: $python cannot import torch; install a CUDA build of torch first"
  exit 2
fi
gpu_report="$("$python" - <<'EOF' 2>&1
import torch
if torch.version.cuda is None:
    raise SystemExit(f"torch {torch.__version__} is a CPU-only build; a CUDA build of torch is needed")
if not torch.cuda.is_available():
    raise SystemExit(f"no CUDA GPU is visible (torch {torch.__version__}, CUDA {torch.version.cuda}, "
                     f"{torch.cuda.device_count()} devices); run this on a GPU machine")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
)"
gpu_rc=$?
log "$gpu_report"
if [ "$gpu_rc" -ne 0 ]; then
  log "gpu_check: FAIL: no usable GPU; nothing was built or run"
  exit 2
fi
if ! command -v nvcc >/dev/null; then
  log "gpu_check: FAIL: nvcc is not on PATH; the CUDA kernels cannot be built"
  exit 2
fi
log "$(nvcc --version | tail -1)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem \
  --format=csv 2>&1 | tee -a "$results"

# 2. Build and install (library, Python module), then the C++ tests, all cores.
step "pip install (CUDA build)" 420 "$python" -m pip install --no-build-isolation --no-deps -q "$root" ||
  { log "gpu_check: FAIL: the build failed; see above"; exit 1; }
step "torchqat.cuda_compiled()" 60 "$python" -c "
import torchqat, sys
print('cuda_compiled', torchqat.cuda_compiled())
sys.exit(0 if torchqat.cuda_compiled() else 1)"
lib="$(ls "$root"/build/libtorchqat.so* 2>/dev/null | head -1)"
step "embedded SASS and PTX" 60 bash -c "cuobjdump --list-elf '$lib' | sed 's/.*\.\(sm_[0-9a-z]*\)\..*/\1/' | sort | uniq -c
  && cuobjdump --list-ptx '$lib' | sed 's/.*\.\(sm_[0-9a-z]*\)\..*/PTX \1/' | sort | uniq -c"
step "build C++ tests" 300 cmake --build "$root/build" --target torchqat_tests -j "$CMAKE_BUILD_PARALLEL_LEVEL"

# 3. Every CUDA test. A skip here is a failure: on this machine each must run. Only the tests that
# need a second GPU (or 40 GB) may skip where the machine has none.
step "C++ CUDA tests (ctest -R CUDA)" 300 bash -c "cd '$root/build' && ctest -R CUDA --output-on-failure \
  --no-tests=error 2>&1 | tee ctest_cuda.log; rc=\${PIPESTATUS[0]};
  n=\$(grep -c '[*]Skipped' ctest_cuda.log); two=\$(python3 -c 'import torch; print(torch.cuda.device_count())');
  echo \"skipped: \$n (device_count \$two)\";
  [ \$rc -eq 0 ] && { [ \$n -eq 0 ] || { [ \$n -le 1 ] && [ \$two -lt 2 ]; }; }"
junit="$out_dir/pytest_cuda.xml"
step "Python CUDA tests (pytest -k cuda)" 420 bash -c "cd '$root/tests/python' && '$python' -m pytest -q -rs \
  -p no:cacheprovider --junitxml='$junit' -k cuda ."
step "Python CUDA tests ran (not skipped)" 30 "$python" - "$junit" <<'EOF'
import sys
import xml.etree.ElementTree as ET
allowed = ("device_1", "beyond_2_31")  # need a second GPU / a 40 GB GPU
own = ("test_fake_quant_cuda", "test_calib_cuda")  # the kernel tests; other files may skip for other reasons
cases = [c for c in ET.parse(sys.argv[1]).getroot().iter("testcase") if c.get("classname", "").startswith(own)]
skipped = [c.get("name") for c in cases if c.find("skipped") is not None]
bad = [n for n in skipped if not any(a in n for a in allowed)]
print(f"{len(cases)} CUDA tests, {len(skipped)} skipped: {skipped}")
sys.exit(1 if bad or not cases else 0)
EOF

# 4. Benchmarks on the GPU (see bench/README.md for the columns); repetitions bound the time.
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}" TORCHQAT_LIB_DIR="$root/build"
step "bench_fake_quant (CUDA)" 180 "$python" bench/bench_fake_quant.py --device cuda --repeat 10
step "bench_calib (CUDA)" 120 "$python" bench/bench_calib.py --device cuda --repeat 10 --no-model
step "bench_qat_step (CUDA ResNet-50 bs64 bf16 channels_last)" 300 "$python" bench/bench_qat_step.py \
  --device cuda --arch resnet50 --batch 64 --bf16 --channels-last --no-compile --steps 20 --warmup 5
# torch.compile of two ResNet-50s costs minutes of inductor time: only with the budget to spare.
if [ $((budget - SECONDS)) -ge 240 ]; then
  step "bench_qat_step, torch.compile variants" 230 "$python" bench/bench_qat_step.py --device cuda \
    --arch resnet50 --batch 64 --bf16 --channels-last --compile --steps 10 --warmup 2
else
  log "bench_qat_step, torch.compile variants: not run, under 240 s of the budget left"
fi

log ""
if [ "${#failed[@]}" -eq 0 ]; then
  log "gpu_check: PASS in $SECONDS s; results in $results"
  exit 0
fi
log "gpu_check: FAIL in $SECONDS s: ${failed[*]}; results in $results"
exit 1
