#pragma once
// The device-independent body of clip and its backward (PACT): argument checks and layout are
// handled here once; each device's registration instantiates it with its own kernels.
#include <ATen/ATen.h>

#include <tuple>

namespace torchqat {
namespace detail {

// x dense in memory order; each bound either one element (step 0) or expanded to x's shape
// with x's strides (step 1), so offset i of every tensor is the same element.
struct ClipArgs {
  at::Tensor x;
  at::Tensor lo;
  at::Tensor hi;
  bool lo_scalar;
  bool hi_scalar;
};

// Checks dtypes, devices and that min / max broadcast to x's shape; bounds take x's dtype.
ClipArgs resolve_clip(const char* op, const at::Tensor& x, const at::Tensor& min, const at::Tensor& max);

// out = max(min(x, hi), lo), NaN propagating like torch.minimum / torch.maximum.
using ClipFwdKernel = void (*)(const ClipArgs&, at::Tensor& out);
// grad_x = grad where lo < x < hi; gmin / gmax (float, or double for double x; each undefined
// when not wanted) = grad where !(x > lo) / !(x < hi).
using ClipBwdKernel = void (*)(const ClipArgs&, const at::Tensor& grad, at::Tensor& grad_x, at::Tensor& gmin,
                               at::Tensor& gmax);

void clip_cpu_kernel(const ClipArgs& a, at::Tensor& out);
void clip_backward_cpu_kernel(const ClipArgs& a, const at::Tensor& grad, at::Tensor& grad_x, at::Tensor& gmin,
                              at::Tensor& gmax);
#ifdef TORCHQAT_WITH_CUDA
void clip_cuda_kernel(const ClipArgs& a, at::Tensor& out);
void clip_backward_cuda_kernel(const ClipArgs& a, const at::Tensor& grad, at::Tensor& grad_x, at::Tensor& gmin,
                               at::Tensor& gmax);
#endif

// grad in x's dtype and strides (the kernels walk one memory order).
at::Tensor grad_like_x(const char* op, const at::Tensor& grad, const at::Tensor& x);

// Sums an elementwise bound gradient down to the bound's own shape and dtype.
at::Tensor reduce_to_bound(const at::Tensor& elementwise, const at::Tensor& bound);

template <ClipFwdKernel K>
at::Tensor clip_impl(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max) {
  const ClipArgs a = resolve_clip("torchqat.clip", x, min, max);
  at::Tensor out = at::empty_like(a.x);
  if (a.x.numel() > 0) K(a, out);
  return out;
}

template <ClipBwdKernel K>
std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_backward_impl(const at::Tensor& grad, const at::Tensor& x,
                                                                  const at::Tensor& min, const at::Tensor& max,
                                                                  bool min_grad, bool max_grad) {
  const char* op = "torchqat.clip_backward";
  const ClipArgs a = resolve_clip(op, x, min, max);
  const at::Tensor g = grad_like_x(op, grad, a.x);
  at::Tensor grad_x = at::empty_like(a.x);
  const auto acc = a.x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor gmin, gmax;
  if (min_grad) gmin = at::empty_like(a.x, a.x.options().dtype(acc));
  if (max_grad) gmax = at::empty_like(a.x, a.x.options().dtype(acc));
  if (a.x.numel() > 0) {
    K(a, g, grad_x, gmin, gmax);
  } else {
    if (min_grad) gmin.zero_();
    if (max_grad) gmax.zero_();
  }
  at::Tensor grad_min = min_grad ? reduce_to_bound(gmin, min) : at::Tensor();
  at::Tensor grad_max = max_grad ? reduce_to_bound(gmax, max) : at::Tensor();
  return {grad_x, grad_min, grad_max};
}

}  // namespace detail
}  // namespace torchqat
