// CPU kernels of clip: at::parallel_for over memory order (x, the expanded bounds and the
// outputs share one layout, see ClipArgs).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "ops/clip_impl.h"

namespace torchqat {
namespace detail {
namespace {

constexpr int64_t kGrain = 32768;

// torch.minimum / torch.maximum semantics: a NaN operand gives NaN.
template <typename T>
inline T min_nan(T a, T b) {
  return (a < b || std::isnan(a)) ? a : b;
}
template <typename T>
inline T max_nan(T a, T b) {
  return (a > b || std::isnan(a)) ? a : b;
}

}  // namespace

void clip_cpu_kernel(const ClipArgs& a, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "torchqat_clip_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = a.x.const_data_ptr<scalar_t>();
    const scalar_t* lo = a.lo.const_data_ptr<scalar_t>();
    const scalar_t* hi = a.hi.const_data_ptr<scalar_t>();
    const int64_t ls = a.lo_scalar ? 0 : 1;
    const int64_t hs = a.hi_scalar ? 0 : 1;
    scalar_t* y = out.data_ptr<scalar_t>();
    at::parallel_for(0, a.x.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const acc_t v = min_nan<acc_t>(static_cast<acc_t>(x[i]), static_cast<acc_t>(hi[i * hs]));
        y[i] = static_cast<scalar_t>(max_nan<acc_t>(v, static_cast<acc_t>(lo[i * ls])));
      }
    });
  });
}

void clip_backward_cpu_kernel(const ClipArgs& a, const at::Tensor& grad, at::Tensor& grad_x, at::Tensor& gmin,
                              at::Tensor& gmax) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(), "torchqat_clip_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = a.x.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* lo = a.lo.const_data_ptr<scalar_t>();
    const scalar_t* hi = a.hi.const_data_ptr<scalar_t>();
    const int64_t ls = a.lo_scalar ? 0 : 1;
    const int64_t hs = a.hi_scalar ? 0 : 1;
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    acc_t* gl = gmin.defined() ? gmin.data_ptr<acc_t>() : nullptr;
    acc_t* gh = gmax.defined() ? gmax.data_ptr<acc_t>() : nullptr;
    at::parallel_for(0, a.x.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const acc_t xv = static_cast<acc_t>(x[i]);
        const acc_t gv = static_cast<acc_t>(g[i]);
        const bool above_min = xv > static_cast<acc_t>(lo[i * ls]);
        const bool below_max = xv < static_cast<acc_t>(hi[i * hs]);
        gx[i] = static_cast<scalar_t>(above_min && below_max ? gv : acc_t(0));
        if (gl) gl[i] = above_min ? acc_t(0) : gv;
        if (gh) gh[i] = below_max ? acc_t(0) : gv;
      }
    });
  });
}

}  // namespace detail
}  // namespace torchqat
