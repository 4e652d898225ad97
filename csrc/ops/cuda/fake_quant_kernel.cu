// CUDA kernels of the fake-quant family. One thread handles VEC consecutive elements with a
// 16-byte load (one element where a pointer is not 16-byte aligned); the channel of a vector
// comes from a multiply-shift divider (no integer division per element) below 2^31 elements,
// from 64-bit division above; float64 computes in double like the CPU; launched on the current
// stream under a device guard.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "ops/fake_quant_impl.h"
#include "ops/quant_math.h"

namespace torchqat {
namespace detail {
namespace {

// How the channel of an element is found: one amax; one channel per vector (inner % VEC == 0);
// consecutive channels (inner == 1, channels-last); anything else, per element.
enum Mode { kTensor = 0, kRow = 1, kCyclic = 2, kGeneral = 3 };

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// Offsets and dividers in Idx: uint32_t (multiply-shift division) below 2^31 elements, the
// common case; uint64_t (plain division) above, where CPU and abs_max/histogram already work.
template <typename Idx>
struct Geometry {
  Idx n;
  at::cuda::detail::IntDivider<Idx> inner;     // divides an offset into (row, position in row)
  at::cuda::detail::IntDivider<Idx> channels;  // divides a row into (outer, channel)
};

template <typename Idx>
__device__ __forceinline__ Idx channel_of(const Geometry<Idx>& g, Idx o) {
  return g.channels.divmod(g.inner.div(o)).mod;
}

// Calls f(element offset j within the vector, channel) for the VEC elements at offset i.
template <int MODE, int VEC, typename Idx, typename F>
__device__ __forceinline__ void for_channels(const Geometry<Idx>& g, Idx i, F f) {
  if (MODE == kTensor) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) f(j, Idx{0});
  } else if (MODE == kRow) {
    const Idx c = channel_of(g, i);
#pragma unroll
    for (int j = 0; j < VEC; ++j) f(j, c);
  } else if (MODE == kCyclic) {
    Idx c = g.channels.mod(i);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      f(j, c);
      c = (c + 1 == g.channels.divisor) ? Idx{0} : c + 1;
    }
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) f(j, channel_of(g, static_cast<Idx>(i + j)));
  }
}

// F is the format (quant_math.h's IntFormat or E4M3Format).
template <typename F, typename T>
__device__ __forceinline__ T fq_elem(T x, Step s, const QuantRange& r) {
  using A = typename Compute<T>::type;
  return static_cast<T>(F::one(static_cast<A>(x), s, r.qmin, r.qmax));
}

template <typename F, typename T, int VEC, int MODE, typename Idx>
__global__ void fq_kernel(const T* __restrict__ x, T* __restrict__ y, Geometry<Idx> g, const float* __restrict__ amax,
                          QuantRange r) {
  const Step s0 = F::make(amax[0], r.bound);
  const Idx stride = static_cast<Idx>(gridDim.x) * blockDim.x * VEC;
  for (Idx i = (static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC; i < g.n; i += stride) {
    if (i + VEC <= g.n) {
      Pack<T, VEC> in = *reinterpret_cast<const Pack<T, VEC>*>(x + i);
      Pack<T, VEC> out;
      for_channels<MODE, VEC>(g, i, [&](int j, Idx c) {
        const Step s = MODE == kTensor ? s0 : F::make(amax[c], r.bound);
        out.v[j] = fq_elem<F>(in.v[j], s, r);
      });
      *reinterpret_cast<Pack<T, VEC>*>(y + i) = out;
    } else {
      for (Idx k = i; k < g.n; ++k) {
        const Idx c = MODE == kTensor ? Idx{0} : channel_of(g, k);
        y[k] = fq_elem<F>(x[k], F::make(amax[c], r.bound), r);
      }
    }
  }
}

// Same rules as the CPU's bwd_run: the gradient passes unchanged inside the range.
template <typename F, typename T>
__device__ __forceinline__ void bwd_one(T gv, T xv, float a, Step s, QuantRange r, T& gx, float* ds) {
  using A = typename Compute<T>::type;
  gx = in_range(static_cast<A>(xv), a) ? gv : static_cast<T>(0.0f);
  if (ds) *ds = mul_rn(static_cast<float>(gv), F::dstep(static_cast<float>(xv), s, r.qmin, r.qmax));
}

template <typename F, typename T, int VEC, int MODE, typename Idx>
__global__ void bwd_kernel(const T* __restrict__ g_in, const T* __restrict__ x, T* __restrict__ gx,
                           float* __restrict__ ds, Geometry<Idx> g, const float* __restrict__ amax, QuantRange r) {
  const Idx stride = static_cast<Idx>(gridDim.x) * blockDim.x * VEC;
  for (Idx i = (static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC; i < g.n; i += stride) {
    if (i + VEC <= g.n) {
      Pack<T, VEC> gv = *reinterpret_cast<const Pack<T, VEC>*>(g_in + i);
      Pack<T, VEC> xv = *reinterpret_cast<const Pack<T, VEC>*>(x + i);
      Pack<T, VEC> out;
      for_channels<MODE, VEC>(g, i, [&](int j, Idx c) {
        bwd_one<F>(gv.v[j], xv.v[j], amax[c], F::make(amax[c], r.bound), r, out.v[j], ds ? ds + i + j : nullptr);
      });
      *reinterpret_cast<Pack<T, VEC>*>(gx + i) = out;
    } else {
      for (Idx k = i; k < g.n; ++k) {
        const Idx c = MODE == kTensor ? Idx{0} : channel_of(g, k);
        bwd_one<F>(g_in[k], x[k], amax[c], F::make(amax[c], r.bound), r, gx[k], ds ? ds + k : nullptr);
      }
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

struct Launch {
  int mode;
  dim3 grid, block;
};

Launch plan(const Layout& L, int vec) {
  Launch p;
  if (L.channels == 1) p.mode = kTensor;
  else if (L.inner == 1) p.mode = kCyclic;
  else if (L.inner % vec == 0) p.mode = kRow;
  else p.mode = kGeneral;
  const int threads = 256;
  const int64_t work = (L.x.numel() + vec - 1) / vec;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t blocks = std::min<int64_t>((work + threads - 1) / threads, int64_t{sms} * 16);
  p.grid = dim3(static_cast<unsigned>(std::max<int64_t>(blocks, 1)));
  p.block = dim3(threads);
  return p;
}

template <typename Idx>
struct IdxTag {
  using type = Idx;
};

template <typename Idx>
Geometry<Idx> geometry(const Layout& L) {
  return {static_cast<Idx>(L.x.numel()), at::cuda::detail::IntDivider<Idx>(static_cast<Idx>(std::max<int64_t>(L.inner, 1))),
          at::cuda::detail::IntDivider<Idx>(static_cast<Idx>(std::max<int64_t>(L.channels, 1)))};
}

// Chooses the index width by numel, VEC by alignment and MODE by layout, then launches.
template <typename T, template <typename, int, int, typename> class Body, typename... Args>
void launch(const Layout& L, bool all_aligned, Args... args) {
  constexpr int kVec = 16 / sizeof(T);
  const int vec = all_aligned ? kVec : 1;
  const Launch p = plan(L, vec);
  auto stream = at::cuda::getCurrentCUDAStream();
  auto go = [&](auto vec_c, auto mode_c, auto idx_c) {
    using Idx = typename decltype(idx_c)::type;
    Body<T, decltype(vec_c)::value, decltype(mode_c)::value, Idx>::run(p.grid, p.block, stream, geometry<Idx>(L),
                                                                       args...);
  };
  auto with_mode = [&](auto vec_c, auto idx_c) {
    // Past 2^31 elements (rare) only two modes are built: per tensor, and the per-element channel
    // that serves every layout. Each kernel costs compile time for every architecture.
    if constexpr (std::is_same_v<typename decltype(idx_c)::type, uint64_t>) {
      if (p.mode == kTensor) go(vec_c, std::integral_constant<int, kTensor>(), idx_c);
      else go(vec_c, std::integral_constant<int, kGeneral>(), idx_c);
    } else {
      switch (p.mode) {
        case kTensor: go(vec_c, std::integral_constant<int, kTensor>(), idx_c); break;
        case kRow: go(vec_c, std::integral_constant<int, kRow>(), idx_c); break;
        case kCyclic: go(vec_c, std::integral_constant<int, kCyclic>(), idx_c); break;
        default: go(vec_c, std::integral_constant<int, kGeneral>(), idx_c); break;
      }
    }
  };
  auto with_vec = [&](auto idx_c) {
    if (vec == 1) with_mode(std::integral_constant<int, 1>(), idx_c);
    else with_mode(std::integral_constant<int, kVec>(), idx_c);
  };
  // Below 2^31 every offset, row and channel fits the 32-bit divider (which needs d <= INT32_MAX).
  if (L.x.numel() < (int64_t{1} << 31)) with_vec(IdxTag<uint32_t>());
  else with_vec(IdxTag<uint64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename F>
struct Fwd {
  template <typename T, int VEC, int MODE, typename Idx>
  struct Body {
    static void run(dim3 grid, dim3 block, cudaStream_t s, Geometry<Idx> g, const T* x, T* y, const float* amax,
                    QuantRange r) {
      fq_kernel<F, T, VEC, MODE, Idx><<<grid, block, 0, s>>>(x, y, g, amax, r);
    }
  };
};

template <typename F>
struct Bwd {
  template <typename T, int VEC, int MODE, typename Idx>
  struct Body {
    static void run(dim3 grid, dim3 block, cudaStream_t s, Geometry<Idx> g, const T* gin, const T* x, T* gx,
                    float* ds, const float* amax, QuantRange r) {
      bwd_kernel<F, T, VEC, MODE, Idx><<<grid, block, 0, s>>>(gin, x, gx, ds, g, amax, r);
    }
  };
};

template <typename F>
void forward(const KernelArgs& a, at::Tensor& out) {
  const Layout& L = a.L;
  c10::cuda::CUDAGuard guard(L.x.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, L.x.scalar_type(), "torchqat_fake_quant_cuda", [&] {
    const scalar_t* x = L.x.const_data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    launch<scalar_t, Fwd<F>::template Body>(L, aligned16(x) && aligned16(y), x, y, L.amax.const_data_ptr<float>(),
                                            a.r);
  });
}

template <typename F>
void backward(const KernelArgs& a, const at::Tensor& grad, at::Tensor& grad_x, at::Tensor& dstep) {
  const Layout& L = a.L;
  c10::cuda::CUDAGuard guard(L.x.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, L.x.scalar_type(), "torchqat_fake_quant_bwd_cuda", [&] {
    const scalar_t* x = L.x.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    float* ds = dstep.defined() ? dstep.data_ptr<float>() : nullptr;
    const bool al = aligned16(x) && aligned16(g) && aligned16(gx);
    launch<scalar_t, Bwd<F>::template Body>(L, al, g, x, gx, ds, L.amax.const_data_ptr<float>(), a.r);
  });
}

}  // namespace

void fake_quant_cuda_kernel(const KernelArgs& a, at::Tensor& out) {
  if (a.fmt == Format::kE4M3) forward<E4M3Format>(a, out);
  else forward<IntFormat>(a, out);
}

void fake_quant_backward_cuda_kernel(const KernelArgs& a, const at::Tensor& grad, at::Tensor& grad_x,
                                     at::Tensor& dstep) {
  if (a.fmt == Format::kE4M3) backward<E4M3Format>(a, grad, grad_x, dstep);
  else backward<IntFormat>(a, grad, grad_x, dstep);
}

}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, CUDA, m) {
  using namespace torchqat::detail;
  m.impl("fake_quant", &fake_quant_impl<fake_quant_cuda_kernel>);
  m.impl("fake_quant_backward", &fake_quant_backward_impl<fake_quant_backward_cuda_kernel>);
  m.impl("fake_quant_e4m3", &fake_quant_e4m3_impl<fake_quant_cuda_kernel>);
  m.impl("fake_quant_e4m3_backward", &fake_quant_e4m3_backward_impl<fake_quant_backward_cuda_kernel>);
}
