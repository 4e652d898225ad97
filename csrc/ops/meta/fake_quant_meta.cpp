// Meta kernels of the fake-quant family: output shapes, dtypes and strides without data, so
// fake tensors (torch.compile, torch.export, torch.onnx's default exporter) can trace the ops.
// They run the same argument checks as the real kernels (symbolic sizes allowed) but not the
// amax value check, which needs the data: the real kernel raises it when the traced graph runs.
#include <torch/library.h>

#include "ops/fake_quant_impl.h"

namespace torchqat {
namespace detail {
namespace {

at::Tensor fake_quant_meta(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits, bool is_unsigned,
                           bool narrow_range, std::optional<int64_t> axis) {
  const char* op = "torchqat.fake_quant";
  quant_range(op, num_bits, is_unsigned, narrow_range);
  check_layout(op, x, amax, axis);
  return at::empty_like(dense(x));
}

std::tuple<at::Tensor, at::Tensor> fake_quant_backward_meta(const at::Tensor& grad, const at::Tensor& x,
                                                            const at::Tensor& amax, int64_t num_bits,
                                                            bool is_unsigned, bool narrow_range,
                                                            std::optional<int64_t> axis, bool amax_grad) {
  const char* op = "torchqat.fake_quant_backward";
  quant_range(op, num_bits, is_unsigned, narrow_range);
  check_layout(op, x, amax, axis);
  check_grad_shape(op, grad, x);
  at::Tensor grad_x = at::empty_like(dense(x));
  at::Tensor grad_amax;  // undefined (None) without amax_grad, as the real kernels return
  if (amax_grad) grad_amax = at::empty_symint(amax.sym_sizes(), amax.options());
  return {grad_x, grad_amax};
}

at::Tensor fake_quant_e4m3_meta(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis) {
  check_layout("torchqat.fake_quant_e4m3", x, amax, axis);
  return at::empty_like(dense(x));
}

std::tuple<at::Tensor, at::Tensor> fake_quant_e4m3_backward_meta(const at::Tensor& grad, const at::Tensor& x,
                                                                 const at::Tensor& amax, std::optional<int64_t> axis,
                                                                 bool amax_grad) {
  const char* op = "torchqat.fake_quant_e4m3_backward";
  check_layout(op, x, amax, axis);
  check_grad_shape(op, grad, x);
  at::Tensor grad_amax;
  if (amax_grad) grad_amax = at::empty_symint(amax.sym_sizes(), amax.options());
  return {at::empty_like(dense(x)), grad_amax};
}

}  // namespace
}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, Meta, m) {
  m.impl("fake_quant", &torchqat::detail::fake_quant_meta);
  m.impl("fake_quant_backward", &torchqat::detail::fake_quant_backward_meta);
  m.impl("fake_quant_e4m3", &torchqat::detail::fake_quant_e4m3_meta);
  m.impl("fake_quant_e4m3_backward", &torchqat::detail::fake_quant_e4m3_backward_meta);
}
