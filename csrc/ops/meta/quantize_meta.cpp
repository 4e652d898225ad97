// Meta kernels of quantize / dequantize (see fake_quant_meta.cpp): same checks as the
// composite definitions in quantize.cpp except amax's values, outputs laid out as they lay theirs.
#include <torch/library.h>

#include "ops/quant_layout.h"

namespace torchqat {
namespace detail {
namespace {

std::tuple<at::Tensor, at::Tensor> quantize_meta(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits,
                                                 bool is_unsigned, bool narrow_range, std::optional<int64_t> axis) {
  const char* op = "torchqat.quantize";
  quant_range(op, num_bits, is_unsigned, narrow_range);
  check_layout(op, x, amax, axis);
  at::Tensor q = at::empty_like(dense(x), x.options().dtype(quant_int_type(num_bits, is_unsigned)));
  at::Tensor scale = at::empty_symint(amax.sym_sizes(), amax.options().dtype(at::kFloat));
  return {q, scale};
}

at::Tensor dequantize_meta(const at::Tensor& q, const at::Tensor& scale, std::optional<int64_t> axis,
                           std::optional<at::ScalarType> dtype) {
  const char* op = "torchqat.dequantize";
  check_quantized_input(op, q);
  const at::Tensor qf = dense(q).to(at::kFloat);
  check_layout(op, qf, scale, axis);
  return at::empty_like(qf, qf.options().dtype(dtype.value_or(at::kFloat)));
}

}  // namespace
}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, Meta, m) {
  m.impl("quantize", &torchqat::detail::quantize_meta);
  m.impl("dequantize", &torchqat::detail::dequantize_meta);
}
