// CUDA kernels of clip: one grid-stride pass over memory order (x, the expanded bounds and the
// outputs share one layout, see ClipArgs), launched on the current stream under a device guard.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ops/clip_impl.h"

namespace torchqat {
namespace detail {
namespace {

template <typename T>
__device__ __forceinline__ T min_nan(T a, T b) {
  return (a < b || isnan(a)) ? a : b;
}
template <typename T>
__device__ __forceinline__ T max_nan(T a, T b) {
  return (a > b || isnan(a)) ? a : b;
}

template <typename T>
__global__ void clip_fwd(const T* __restrict__ x, const T* __restrict__ lo, const T* __restrict__ hi, int64_t ls,
                         int64_t hs, T* __restrict__ y, int64_t n) {
  using acc_t = at::opmath_type<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const acc_t v = min_nan<acc_t>(static_cast<acc_t>(x[i]), static_cast<acc_t>(hi[i * hs]));
    y[i] = static_cast<T>(max_nan<acc_t>(v, static_cast<acc_t>(lo[i * ls])));
  }
}

template <typename T>
__global__ void clip_bwd(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ lo,
                         const T* __restrict__ hi, int64_t ls, int64_t hs, T* __restrict__ gx,
                         at::opmath_type<T>* __restrict__ gl, at::opmath_type<T>* __restrict__ gh, int64_t n) {
  using acc_t = at::opmath_type<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const acc_t xv = static_cast<acc_t>(x[i]);
    const acc_t gv = static_cast<acc_t>(g[i]);
    const bool above_min = xv > static_cast<acc_t>(lo[i * ls]);
    const bool below_max = xv < static_cast<acc_t>(hi[i * hs]);
    gx[i] = static_cast<T>(above_min && below_max ? gv : acc_t(0));
    if (gl) gl[i] = above_min ? acc_t(0) : gv;
    if (gh) gh[i] = below_max ? acc_t(0) : gv;
  }
}

dim3 grid_for(int64_t n, int threads) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t{sms} * 16);
  return dim3(static_cast<unsigned>(std::max<int64_t>(blocks, 1)));
}

}  // namespace

void clip_cuda_kernel(const ClipArgs& a, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const int64_t n = a.x.numel();
  constexpr int threads = 256;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "torchqat_clip_cuda", [&] {
    clip_fwd<scalar_t><<<grid_for(n, threads), threads, 0, stream>>>(
        a.x.const_data_ptr<scalar_t>(), a.lo.const_data_ptr<scalar_t>(), a.hi.const_data_ptr<scalar_t>(),
        a.lo_scalar ? 0 : 1, a.hi_scalar ? 0 : 1, out.data_ptr<scalar_t>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void clip_backward_cuda_kernel(const ClipArgs& a, const at::Tensor& grad, at::Tensor& grad_x, at::Tensor& gmin,
                               at::Tensor& gmax) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const int64_t n = a.x.numel();
  constexpr int threads = 256;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "torchqat_clip_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    clip_bwd<scalar_t><<<grid_for(n, threads), threads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), a.x.const_data_ptr<scalar_t>(), a.lo.const_data_ptr<scalar_t>(),
        a.hi.const_data_ptr<scalar_t>(), a.lo_scalar ? 0 : 1, a.hi_scalar ? 0 : 1, grad_x.data_ptr<scalar_t>(),
        gmin.defined() ? gmin.data_ptr<acc_t>() : nullptr, gmax.defined() ? gmax.data_ptr<acc_t>() : nullptr, n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, CUDA, m) {
  using namespace torchqat::detail;
  m.impl("clip", &clip_impl<clip_cuda_kernel>);
  m.impl("clip_backward", &clip_backward_impl<clip_backward_cuda_kernel>);
}
