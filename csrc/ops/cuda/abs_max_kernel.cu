// CUDA abs_max: one pass over x in memory order with 16-byte loads where aligned. The max is
// taken over the IEEE bit patterns of |x| as int (finite < Inf < NaN), so NaN/Inf reach the
// result and integer atomicMax combines blocks into the zero-filled output. Three shapes of the
// coalesced layout (ReduceLayout), each with its own kernel:
//   inner dim reduced, no kept dims   -> whole-tensor reduction (per tensor)
//   inner dim reduced, kept outer dims -> rows: a warp (long rows) or a thread (short rows) per row
//   inner dim kept                    -> columns: a thread per column over many rows
// Launched on the current stream under a device guard; no host synchronisation.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "ops/calib_ops_impl.h"

namespace torchqat {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxOuter = 12;     // outer coalesced dims a kernel can decompose a row over
constexpr int64_t kShortRow = 128;  // rows shorter than this get a thread each, not a warp

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

struct Geom {
  int64_t n;
  int64_t inner;         // length of the innermost dim
  int64_t inner_ostride; // its out stride (0 = reduced)
  int nouter;
  bool outer_kept;       // some outer dim is kept: a row's out offset varies
  int64_t sizes[kMaxOuter];
  int64_t ostr[kMaxOuter];
};

template <typename T>
__device__ __forceinline__ int abs_bits(T v) {
  return __float_as_int(static_cast<float>(v)) & 0x7fffffff;
}

__device__ __forceinline__ int warp_max(int m) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m;
}

__device__ __forceinline__ int64_t row_base(const Geom& g, int64_t row) {
  int64_t base = 0;
  for (int d = g.nouter - 1; d >= 0; --d) {
    base += (row % g.sizes[d]) * g.ostr[d];
    row /= g.sizes[d];
  }
  return base;
}

// max over x[begin, end) by `lanes` cooperating threads (lane = this thread's index among them).
template <typename T, int VEC>
__device__ __forceinline__ int span_max(const T* __restrict__ x, int64_t begin, int64_t end, int lane, int lanes) {
  int m = 0;
  int64_t i = begin + static_cast<int64_t>(lane) * VEC;
  for (; i + VEC <= end; i += static_cast<int64_t>(lanes) * VEC) {
    const Pack<T, VEC> p = *reinterpret_cast<const Pack<T, VEC>*>(x + i);
#pragma unroll
    for (int j = 0; j < VEC; ++j) m = max(m, abs_bits(p.v[j]));
  }
  // Tail (VEC > 1 only): fewer than VEC elements past the last full vector.
  if (VEC > 1 && i < end) {
    for (int64_t k = i; k < end; ++k) m = max(m, abs_bits(x[k]));
  }
  return m;
}

template <typename T, int VEC>
__global__ void tensor_kernel(const T* __restrict__ x, int64_t n, int* __restrict__ out) {
  __shared__ int warp_m[kThreads / 32];
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  // Each thread reads vectors tid, tid + nthreads, ...; the tail is shared the same way.
  int m = 0;
  const int64_t nvec = n / VEC;
  for (int64_t v = tid; v < nvec; v += nthreads) {
    const Pack<T, VEC> p = *reinterpret_cast<const Pack<T, VEC>*>(x + v * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) m = max(m, abs_bits(p.v[j]));
  }
  for (int64_t k = nvec * VEC + tid; k < n; k += nthreads) m = max(m, abs_bits(x[k]));
  m = warp_max(m);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) warp_m[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < static_cast<int>(blockDim.x >> 5) ? warp_m[lane] : 0;
    m = warp_max(m);
    if (lane == 0) atomicMax(out, m);
  }
}

// Long reduced rows: a warp per tile (a row, or a segment of one when rows are few and long).
template <typename T, int VEC>
__global__ void rows_warp_kernel(const T* __restrict__ x, Geom g, int64_t seg_len, int64_t segs,
                                 int* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int64_t tiles = (g.n / g.inner) * segs;
  for (int64_t t = warp; t < tiles; t += nwarps) {
    const int64_t row = t / segs;
    const int64_t seg = t - row * segs;
    const int64_t begin = row * g.inner + seg * seg_len;
    const int64_t row_end = (row + 1) * g.inner;
    const int64_t end = begin + seg_len < row_end ? begin + seg_len : row_end;
    int m = warp_max(span_max<T, VEC>(x, begin, end, lane, 32));
    if (lane == 0) atomicMax(out + row_base(g, row), m);
  }
}

// Short reduced rows (e.g. NCHW with small H*W): a thread per row.
template <typename T>
__global__ void rows_thread_kernel(const T* __restrict__ x, Geom g, int* __restrict__ out) {
  const int64_t rows = g.n / g.inner;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; row < rows; row += stride) {
    int m = 0;
    const T* r = x + row * g.inner;
    for (int64_t k = 0; k < g.inner; ++k) m = max(m, abs_bits(r[k]));
    atomicMax(out + row_base(g, row), m);
  }
}

// Kept inner dim: `active` threads (a multiple of inner) each own one column and walk rows
// row0, row0 + step, ...; consecutive threads read consecutive addresses. The running max is
// flushed whenever the row's out offset changes (only when an outer dim is kept as well).
template <typename T>
__global__ void cols_kernel(const T* __restrict__ x, Geom g, int64_t active, int* __restrict__ out) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tid >= active) return;
  const int64_t col = tid % g.inner;
  const int64_t step = active / g.inner;
  const int64_t rows = g.n / g.inner;
  int64_t row = tid / g.inner;
  if (row >= rows) return;
  int64_t base = g.outer_kept ? row_base(g, row) : 0;
  int m = 0;
  for (; row < rows; row += step) {
    if (g.outer_kept) {
      const int64_t b = row_base(g, row);
      if (b != base) {
        atomicMax(out + base + col * g.inner_ostride, m);
        base = b;
        m = 0;
      }
    }
    m = max(m, abs_bits(x[row * g.inner + col]));
  }
  atomicMax(out + base + col * g.inner_ostride, m);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int64_t blocks_for(int64_t work, int64_t per_block, int sms) {
  return std::max<int64_t>(1, std::min<int64_t>((work + per_block - 1) / per_block, int64_t{sms} * 8));
}

template <typename T>
void launch(const ReduceLayout& L, const Geom& g) {
  constexpr int kVec = 16 / sizeof(T);
  const T* x = L.x.const_data_ptr<T>();
  int* out = reinterpret_cast<int*>(L.out.data_ptr<float>());
  auto stream = at::cuda::getCurrentCUDAStream();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const bool vec = aligned16(x) && g.inner % kVec == 0;

  if (g.inner_ostride == 0 && g.nouter == 0) {
    const int64_t blocks = blocks_for(g.n, int64_t{kThreads} * kVec * 4, sms);
    if (aligned16(x)) {
      tensor_kernel<T, kVec><<<blocks, kThreads, 0, stream>>>(x, g.n, out);
    } else {
      tensor_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(x, g.n, out);
    }
  } else if (g.inner_ostride == 0 && g.inner >= kShortRow) {
    const int64_t rows = g.n / g.inner;
    // Split long rows into segments until there are enough tiles to fill the GPU.
    const int64_t want = int64_t{sms} * 64;
    int64_t segs = std::min<int64_t>((want + rows - 1) / rows, (g.inner + 4095) / 4096);
    segs = std::max<int64_t>(segs, 1);
    int64_t seg_len = (g.inner + segs - 1) / segs;
    seg_len = (seg_len + kVec - 1) / kVec * kVec;  // segments start on vector boundaries
    segs = (g.inner + seg_len - 1) / seg_len;
    const int64_t blocks = blocks_for(rows * segs, kThreads / 32, sms);
    if (vec) {
      rows_warp_kernel<T, kVec><<<blocks, kThreads, 0, stream>>>(x, g, seg_len, segs, out);
    } else {
      rows_warp_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(x, g, seg_len, segs, out);
    }
  } else if (g.inner_ostride == 0) {
    const int64_t blocks = blocks_for(g.n / g.inner, kThreads, sms);
    rows_thread_kernel<T><<<blocks, kThreads, 0, stream>>>(x, g, out);
  } else {
    // Enough threads that every column has one, rounded down to whole rows of columns.
    int64_t threads = std::max<int64_t>(g.inner, std::min<int64_t>(g.n, int64_t{sms} * 8 * kThreads));
    threads = threads / g.inner * g.inner;
    const int64_t blocks = (threads + kThreads - 1) / kThreads;
    cols_kernel<T><<<blocks, kThreads, 0, stream>>>(x, g, threads, out);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void abs_max_cuda_kernel(const ReduceLayout& L) {
  const int nouter = static_cast<int>(L.sizes.size()) - 1;
  if (nouter > kMaxOuter) {
    // Layouts with more alternating kept/reduced dims than the kernels decompose (over 24
    // dims): ATen's reduction, with the same NaN-propagating result.
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < L.x.dim(); ++d)
      if (L.out.dim() == 0 || L.out.size(d) == 1) dims.push_back(d);
    L.out.copy_(at::amax(L.x.abs().to(at::kFloat), dims, /*keepdim=*/L.out.dim() > 0));
    return;
  }
  c10::cuda::CUDAGuard guard(L.x.device());
  Geom g{};
  g.n = L.x.numel();
  g.inner = L.sizes.back();
  g.inner_ostride = L.out_strides.back();
  g.nouter = nouter;
  g.outer_kept = false;
  for (int d = 0; d < nouter; ++d) {
    g.sizes[d] = L.sizes[static_cast<size_t>(d)];
    g.ostr[d] = L.out_strides[static_cast<size_t>(d)];
    g.outer_kept = g.outer_kept || g.ostr[d] != 0;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, L.x.scalar_type(), "torchqat_abs_max_cuda",
                                  [&] { launch<scalar_t>(L, g); });
}

}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, CUDA, m) {
  using namespace torchqat::detail;
  m.impl("abs_max", &abs_max_impl<abs_max_cuda_kernel>);
}
