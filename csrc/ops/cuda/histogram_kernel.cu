// CUDA histogram of |x|: privatised bins. Each block counts into 32-bit bins in shared memory
// (several replicas, one per group of warps, so a hot bin such as ReLU's zeros is not one
// contended address), then adds its non-zero bins to the int64 histogram in global memory with
// one atomicAdd each. 16-byte loads where aligned; current stream; never synchronises with the
// host. Histograms too large for shared memory count with global atomics directly.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "ops/calib_ops_impl.h"

namespace torchqat {
namespace detail {
namespace {

constexpr int kThreads = 512;
constexpr int kMaxReplicas = 4;
constexpr size_t kDefaultSmem = 48 * 1024;  // usable without opting in

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

struct Bins {
  int64_t bins;
  float fbins;
  float inv;
  bool skip_zeros;
};

template <typename Count, typename T>
__device__ __forceinline__ void count_one(Count* h, T v, const Bins& b) {
  const int64_t i = histogram_bin(fabsf(static_cast<float>(v)), b.inv, b.bins, b.fbins, b.skip_zeros);
  if (i >= 0) atomicAdd(h + i, Count(1));
}

// Calls count_one on every element of x this thread owns (grid-stride over vectors, then tail).
template <int VEC, typename T, typename Count>
__device__ __forceinline__ void count_all(const T* __restrict__ x, int64_t n, Count* h, const Bins& b) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nvec = n / VEC;
  for (int64_t v = tid; v < nvec; v += nthreads) {
    const Pack<T, VEC> p = *reinterpret_cast<const Pack<T, VEC>*>(x + v * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) count_one(h, p.v[j], b);
  }
  for (int64_t k = nvec * VEC + tid; k < n; k += nthreads) count_one(h, x[k], b);
}

template <typename T, int VEC>
__global__ void hist_smem_kernel(const T* __restrict__ x, int64_t n, unsigned long long* __restrict__ hist, Bins b,
                                 int replicas) {
  extern __shared__ unsigned int smem[];
  const int total = static_cast<int>(b.bins) * replicas;
  for (int i = threadIdx.x; i < total; i += blockDim.x) smem[i] = 0u;
  __syncthreads();
  unsigned int* mine = smem + ((threadIdx.x >> 5) % replicas) * b.bins;
  count_all<VEC>(x, n, mine, b);
  __syncthreads();
  for (int i = threadIdx.x; i < b.bins; i += blockDim.x) {
    unsigned long long s = 0;
    for (int r = 0; r < replicas; ++r) s += smem[r * b.bins + i];
    if (s) atomicAdd(hist + i, s);
  }
}

template <typename T, int VEC>
__global__ void hist_global_kernel(const T* __restrict__ x, int64_t n, unsigned long long* __restrict__ hist,
                                   Bins b) {
  count_all<VEC>(x, n, hist, b);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T>
void launch(const at::Tensor& x, at::Tensor& hist, const Bins& b) {
  constexpr int kVec = 16 / sizeof(T);
  const T* px = x.const_data_ptr<T>();
  auto* ph = reinterpret_cast<unsigned long long*>(hist.data_ptr<int64_t>());
  const int64_t n = x.numel();
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  auto stream = at::cuda::getCurrentCUDAStream();
  const bool vec = aligned16(px);
  // Few blocks (each flushes all its bins once), but enough to fill the GPU; and at most 2^31
  // elements per block, so a 32-bit shared counter cannot overflow.
  int64_t blocks = std::min<int64_t>((n + int64_t{kThreads} * kVec * 8 - 1) / (int64_t{kThreads} * kVec * 8),
                                     int64_t{prop->multiProcessorCount} * 2);
  blocks = std::max<int64_t>({blocks, int64_t{1}, (n >> 31) + 1});

  const size_t bytes1 = static_cast<size_t>(b.bins) * sizeof(unsigned int);
  const size_t optin = static_cast<size_t>(prop->sharedMemPerBlockOptin);
  if (bytes1 <= optin) {
    const int replicas = static_cast<int>(std::max<size_t>(1, std::min<size_t>(kMaxReplicas, kDefaultSmem / bytes1)));
    const size_t bytes = bytes1 * static_cast<size_t>(replicas);
    auto kernel = vec ? hist_smem_kernel<T, kVec> : hist_smem_kernel<T, 1>;
    if (bytes > kDefaultSmem) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(bytes)));
    }
    kernel<<<blocks, kThreads, bytes, stream>>>(px, n, ph, b, replicas);
  } else {
    auto kernel = vec ? hist_global_kernel<T, kVec> : hist_global_kernel<T, 1>;
    kernel<<<blocks, kThreads, 0, stream>>>(px, n, ph, b);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void histogram_abs_cuda_kernel(const at::Tensor& x, at::Tensor& hist, float inv_width, bool skip_zeros) {
  c10::cuda::CUDAGuard guard(x.device());
  const Bins b{hist.numel(), static_cast<float>(hist.numel()), inv_width, skip_zeros};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "torchqat_histogram_abs_cuda",
                                  [&] { launch<scalar_t>(x, hist, b); });
}

}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, CUDA, m) {
  using namespace torchqat::detail;
  m.impl("histogram_abs", &histogram_abs_impl<histogram_abs_cuda_kernel>);
}
