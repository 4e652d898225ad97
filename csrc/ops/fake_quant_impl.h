#pragma once
// The device-independent body of fake_quant and its backward; each device's registration
// instantiates it with its own kernels, so checks and shapes are handled once.
#include "ops/kernels.h"
#include "torchqat/quant_rules.h"

namespace torchqat {
namespace detail {

using FwdKernel = void (*)(const KernelArgs&, at::Tensor&);
using BwdKernel = void (*)(const KernelArgs&, const at::Tensor&, at::Tensor&, at::Tensor&);

// fake_quant_backward's own check (beyond check_layout's): grad has x's shape.
inline void check_grad_shape(const char* op, const at::Tensor& grad, const at::Tensor& x) {
  TORCH_CHECK_VALUE(grad.sym_sizes() == x.sym_sizes(), op, ": grad of shape ", grad.sym_sizes(),
                    " does not match x of shape ", x.sym_sizes());
}

template <FwdKernel K>
at::Tensor fake_quant_impl(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits, bool is_unsigned,
                           bool narrow_range, std::optional<int64_t> axis) {
  const char* op = "torchqat.fake_quant";
  const QuantRange r = quant_range(op, num_bits, is_unsigned, narrow_range);
  const Layout L = resolve_layout(op, x, amax, axis);
  at::Tensor out = at::empty_like(L.x);  // dense input: same strides (channels_last stays channels_last)
  if (L.x.numel() > 0) K({L, r}, out);
  return out;
}

// The backward of either format: the STE mask for x, and the LSQ gradient for amax.
template <BwdKernel K>
std::tuple<at::Tensor, at::Tensor> backward_impl(const char* op, const QuantRange& r, Format fmt,
                                                 const at::Tensor& grad, const at::Tensor& x, const at::Tensor& amax,
                                                 std::optional<int64_t> axis, bool amax_grad) {
  const Layout L = resolve_layout(op, x, amax, axis, /*check_values=*/false);
  check_grad_shape(op, grad, x);
  at::Tensor g = grad;
  if (g.scalar_type() != L.x.scalar_type() || g.strides() != L.x.strides() || g.device() != L.x.device()) {
    g = at::empty_like(L.x).copy_(grad);
  }
  at::Tensor grad_x = at::empty_like(L.x);
  at::Tensor dstep;
  if (amax_grad) dstep = at::empty_like(L.x, L.x.options().dtype(at::kFloat));
  if (L.x.numel() > 0) K({L, r, fmt}, g, grad_x, dstep);
  at::Tensor grad_amax;
  if (amax_grad) {
    at::Tensor sums;
    if (L.axis == kMultiAxis) {
      std::vector<int64_t> dims;  // amax's broadcast dims
      for (int64_t d = 0; d < amax.dim(); ++d)
        if (amax.size(d) == 1) dims.push_back(d);
      sums = dims.empty() ? dstep : dstep.sum(dims, /*keepdim=*/true);
    } else if (L.axis < 0) {
      sums = dstep.sum();
    } else {
      std::vector<int64_t> dims;
      for (int64_t d = 0; d < L.x.dim(); ++d)
        if (d != L.axis) dims.push_back(d);
      sums = dims.empty() ? dstep : dstep.sum(dims);
    }
    // LSQ (Esser et al. 2020): the rule of quant_rules.h, N per sample (bound 448 for E4M3).
    const bool along_dim0 = L.axis == 0 || (L.axis == kMultiAxis && amax.size(0) > 1);
    const double scale = lsq_amax_grad_scale(lsq_sample_count(L.x.sizes(), amax.numel(), along_dim0), r.bound);
    grad_amax = reshape_like_amax(sums * scale, amax);
  }
  return {grad_x, grad_amax};
}

template <BwdKernel K>
std::tuple<at::Tensor, at::Tensor> fake_quant_backward_impl(const at::Tensor& grad, const at::Tensor& x,
                                                            const at::Tensor& amax, int64_t num_bits,
                                                            bool is_unsigned, bool narrow_range,
                                                            std::optional<int64_t> axis, bool amax_grad) {
  const char* op = "torchqat.fake_quant_backward";
  const QuantRange r = quant_range(op, num_bits, is_unsigned, narrow_range);
  return backward_impl<K>(op, r, Format::kInt, grad, x, amax, axis, amax_grad);
}

template <FwdKernel K>
at::Tensor fake_quant_e4m3_impl(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis) {
  const char* op = "torchqat.fake_quant_e4m3";
  const Layout L = resolve_layout(op, x, amax, axis);
  at::Tensor out = at::empty_like(L.x);
  if (L.x.numel() > 0) K({L, e4m3_range(), Format::kE4M3}, out);
  return out;
}

template <BwdKernel K>
std::tuple<at::Tensor, at::Tensor> fake_quant_e4m3_backward_impl(const at::Tensor& grad, const at::Tensor& x,
                                                                 const at::Tensor& amax, std::optional<int64_t> axis,
                                                                 bool amax_grad) {
  return backward_impl<K>("torchqat.fake_quant_e4m3_backward", e4m3_range(), Format::kE4M3, grad, x, amax, axis,
                          amax_grad);
}

}  // namespace detail
}  // namespace torchqat
