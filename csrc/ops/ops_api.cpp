// C++ entry points: typed dispatcher calls, so C++ users get device dispatch and autograd.
#include <ATen/core/dispatch/Dispatcher.h>

#include "torchqat/ops.h"

namespace torchqat {

namespace {
template <typename Sig>
c10::TypedOperatorHandle<Sig> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}
}  // namespace

at::Tensor fake_quant(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits, bool is_unsigned,
                      bool narrow_range, std::optional<int64_t> axis) {
  static auto op = handle<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool, bool,
                                     std::optional<int64_t>)>("torchqat::fake_quant");
  return op.call(x, amax, num_bits, is_unsigned, narrow_range, axis);
}

std::tuple<at::Tensor, at::Tensor> fake_quant_backward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& amax, int64_t num_bits, bool is_unsigned,
                                                       bool narrow_range, std::optional<int64_t> axis,
                                                       bool amax_grad) {
  static auto op = handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             int64_t, bool, bool, std::optional<int64_t>, bool)>(
      "torchqat::fake_quant_backward");
  return op.call(grad, x, amax, num_bits, is_unsigned, narrow_range, axis, amax_grad);
}

at::Tensor fake_quant_e4m3(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis) {
  static auto op = handle<at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<int64_t>)>(
      "torchqat::fake_quant_e4m3");
  return op.call(x, amax, axis);
}

std::tuple<at::Tensor, at::Tensor> fake_quant_e4m3_backward(const at::Tensor& grad, const at::Tensor& x,
                                                            const at::Tensor& amax, std::optional<int64_t> axis,
                                                            bool amax_grad) {
  static auto op = handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             std::optional<int64_t>, bool)>(
      "torchqat::fake_quant_e4m3_backward");
  return op.call(grad, x, amax, axis, amax_grad);
}

std::tuple<at::Tensor, at::Tensor> quantize(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits,
                                            bool is_unsigned, bool narrow_range, std::optional<int64_t> axis) {
  static auto op = handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t, bool,
                                                             bool, std::optional<int64_t>)>("torchqat::quantize");
  return op.call(x, amax, num_bits, is_unsigned, narrow_range, axis);
}

at::Tensor dequantize(const at::Tensor& q, const at::Tensor& scale, std::optional<int64_t> axis,
                      std::optional<at::ScalarType> dtype) {
  static auto op = handle<at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<int64_t>,
                                     std::optional<at::ScalarType>)>("torchqat::dequantize");
  return op.call(q, scale, axis, dtype);
}

at::Tensor abs_max(const at::Tensor& x, at::IntArrayRef keep_dims) {
  static auto op = handle<at::Tensor(const at::Tensor&, at::IntArrayRef)>("torchqat::abs_max");
  return op.call(x, keep_dims);
}

at::Tensor fake_quant_blocked(const at::Tensor& x, const at::Tensor& amax, int64_t block_size, int64_t num_bits,
                              bool is_unsigned, bool narrow_range) {
  static auto op = handle<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, int64_t, bool, bool)>(
      "torchqat::fake_quant_blocked");
  return op.call(x, amax, block_size, num_bits, is_unsigned, narrow_range);
}

at::Tensor abs_max_blocked(const at::Tensor& x, int64_t block_size) {
  static auto op = handle<at::Tensor(const at::Tensor&, int64_t)>("torchqat::abs_max_blocked");
  return op.call(x, block_size);
}

at::Tensor clip(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max) {
  static auto op = handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>("torchqat::clip");
  return op.call(x, min, max);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_backward(const at::Tensor& grad, const at::Tensor& x,
                                                             const at::Tensor& min, const at::Tensor& max,
                                                             bool min_grad, bool max_grad) {
  static auto op = handle<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, bool)>(
      "torchqat::clip_backward");
  return op.call(grad, x, min, max, min_grad, max_grad);
}

}  // namespace torchqat
