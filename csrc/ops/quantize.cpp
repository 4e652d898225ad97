// Real quantization round trip (quantize -> integer tensor, dequantize -> float). Written with
// ATen ops, so one composite implementation serves every device; its arithmetic is the same
// as the fake-quant kernels' (x * (1/step), round half even, clamp; q * step), so
// dequantize(quantize(x)) equals fake_quant(x) bit for bit in fp32.
#include <torch/library.h>

#include "ops/quant_layout.h"

namespace torchqat {
namespace detail {

at::ScalarType quant_int_type(int64_t num_bits, bool is_unsigned) {
  if (num_bits <= 8) return is_unsigned ? at::kByte : at::kChar;
  return is_unsigned ? at::kInt : at::kShort;
}

void check_quantized_input(const char* op, const at::Tensor& q) {
  TORCH_CHECK_TYPE(!at::isFloatingType(q.scalar_type()) && q.scalar_type() != at::kBool, op,
                   ": q must be an integer tensor, got ", q.scalar_type());
}

namespace {

// Shape that broadcasts a [channels] vector against x along axis (a multi-axis amax keeps its
// own broadcast shape).
std::vector<int64_t> channel_shape(int64_t dim, int64_t axis, int64_t channels, const at::Tensor& amax) {
  if (axis == kMultiAxis) return amax.sizes().vec();
  std::vector<int64_t> s(static_cast<size_t>(std::max<int64_t>(dim, 1)), 1);
  if (axis >= 0) s[static_cast<size_t>(axis)] = channels;
  return s;
}

std::tuple<at::Tensor, at::Tensor> quantize(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits,
                                            bool is_unsigned, bool narrow_range, std::optional<int64_t> axis) {
  const char* op = "torchqat.quantize";
  const QuantRange r = quant_range(op, num_bits, is_unsigned, narrow_range);
  const Layout L = resolve_layout(op, x, amax, axis);
  const at::Tensor per_channel = L.axis == kMultiAxis ? amax.detach().to(at::kFloat) : L.amax;
  at::Tensor step = per_channel / r.bound;
  at::Tensor inv = at::reciprocal(step);
  const at::Tensor zero = at::logical_not(at::isfinite(inv));  // amax 0: channel quantizes to 0
  inv = inv.masked_fill(zero, 0.0f);
  step = step.masked_fill(zero, 1.0f);
  const auto shape = channel_shape(x.dim(), L.axis, L.channels, amax);
  const at::Tensor xf = L.x.to(at::kFloat);
  at::Tensor q = at::clamp(at::round(xf * inv.reshape(shape)), r.qmin, r.qmax).to(quant_int_type(num_bits, is_unsigned));
  if (x.dim() == 0) q = q.reshape({});
  // float32 whatever amax's dtype: a bf16/fp16 scale would round the step fake_quant uses.
  return {q, step.reshape(amax.sizes())};
}

at::Tensor dequantize(const at::Tensor& q, const at::Tensor& scale, std::optional<int64_t> axis,
                      std::optional<at::ScalarType> dtype) {
  const char* op = "torchqat.dequantize";
  check_quantized_input(op, q);
  const Layout L = resolve_layout(op, q.to(at::kFloat), scale, axis);
  const auto shape = channel_shape(q.dim(), L.axis, L.channels, scale);
  const at::Tensor per_channel = L.axis == kMultiAxis ? scale.detach().to(at::kFloat) : L.amax;
  at::Tensor y = L.x * per_channel.reshape(shape);
  if (q.dim() == 0) y = y.reshape({});
  return y.to(dtype.value_or(at::kFloat));
}

}  // namespace
}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_FRAGMENT(torchqat, m) {
  m.def(
      "quantize(Tensor x, Tensor amax, int num_bits=8, bool unsigned=False, bool narrow_range=False, "
      "int? axis=None) -> (Tensor, Tensor)");
  m.def("dequantize(Tensor q, Tensor scale, int? axis=None, ScalarType? dtype=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(torchqat, CompositeExplicitAutograd, m) {
  m.impl("quantize", &torchqat::detail::quantize);
  m.impl("dequantize", &torchqat::detail::dequantize);
}
