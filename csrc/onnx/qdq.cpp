// torchqat::fake_quant(x, amax, num_bits, unsigned, narrow_range, axis) -> QuantizeLinear ->
// DequantizeLinear, the rules of DESIGN.md's Export bullet and of Python's symbolic.py; and
// torchqat::fake_quant_e4m3(x, amax, axis) -> the same pair with a FLOAT8E4M3FN zero point.
#include <ATen/ATen.h>

#include "onnx/op_table.h"
#include "torchqat/onnx/export.h"

namespace torchqat::onnx::detail {
namespace {

using torch::jit::Node;

// Scales below the smallest normal fp32 (zero, subnormal) become kZeroAmaxScale.
constexpr float kMinNormalFloat = 1.17549435e-38f;

// The axis of x an amax belongs to, or -1 for one amax: a 1-d amax of C elements goes with the
// op's axis argument, a broadcast-shaped one ([K,1,1,1], [1,C,1,1]) with its one dim > 1.
int64_t channel_axis(const Node& n, const at::Tensor& amax, std::optional<int64_t> axis, int64_t rank) {
  if (amax.numel() == 1) return -1;
  if (amax.dim() == 1) {
    TORCH_CHECK(axis.has_value(), GraphBuilder::where(n), ": a per-channel amax of ", amax.numel(),
                " elements without an axis");
    return *axis < 0 ? *axis + rank : *axis;
  }
  int64_t big = -1;
  for (int64_t i = 0; i < amax.dim(); ++i) {
    if (amax.size(i) == 1) continue;
    TORCH_CHECK(big < 0, GraphBuilder::where(n), ": an amax of shape ", amax.sizes(),
                "; ONNX Q/DQ has one quantization axis");
    big = i;
  }
  const int64_t inferred = big + (rank - amax.dim());
  TORCH_CHECK(!axis || (*axis < 0 ? *axis + rank : *axis) == inferred, GraphBuilder::where(n), ": axis ", *axis,
              " does not match the amax of shape ", amax.sizes());
  return inferred;
}

// The scale and zero point initializers of one amax (made once: a shared quantizer has one).
// bound: 127, 255 (unsigned) or 448 (FP8); zp_type: int8, uint8 or float8_e4m3fn.
std::pair<std::string, std::string> scale_and_zero_point(GraphBuilder& g, const at::Tensor& amax, float bound,
                                                         at::ScalarType zp_type, bool per_channel) {
  const std::string key = "qdq-params:" + std::to_string(reinterpret_cast<uintptr_t>(amax.data_ptr())) + ":" +
                          c10::toString(zp_type) + (per_channel ? ":c" : ":t");
  if (const std::string* cached = g.cached(key)) {
    const auto sep = cached->find('\n');
    return {cached->substr(0, sep), cached->substr(sep + 1)};
  }
  const auto path = g.module_info().quantizer_paths.find(amax.data_ptr());
  const std::string base =
      path != g.module_info().quantizer_paths.end() && !path->second.empty() ? path->second : std::string("quantizer");

  // scale = amax / bound in fp32, as the fake-quant op's step.
  at::Tensor scale = amax.detach().to(at::kCPU, at::kFloat).flatten() / bound;
  scale = at::where(scale < kMinNormalFloat, at::full_like(scale, kZeroAmaxScale), scale);
  if (!per_channel) scale = scale.reshape({});
  const at::Tensor zero_point = at::zeros(scale.sizes(), at::TensorOptions().dtype(zp_type));
  std::pair<std::string, std::string> names{g.add_initializer(scale, base + ".scale"),
                                            g.add_initializer(zero_point, base + ".zero_point")};
  g.cache(key, names.first + "\n" + names.second);
  return names;
}

// The Q/DQ pair of x with the amax constant (checked finite and >= 0).
void emit_qdq(const Node& n, GraphBuilder& g, const at::Tensor& amax, std::optional<int64_t> axis, float bound,
              at::ScalarType zp_type) {
  const Value* x = n.input(0);
  const at::Tensor a = amax.detach().to(at::kCPU, at::kFloat);
  TORCH_CHECK_VALUE(at::isfinite(a).all().item<bool>() && a.min().item<float>() >= 0.0f, GraphBuilder::where(n),
                    ": amax must be finite and >= 0");

  const int64_t rank = static_cast<int64_t>(g.shape(x).size());
  const int64_t ch = channel_axis(n, amax, axis, rank);
  const auto [scale, zero_point] = scale_and_zero_point(g, amax, bound, zp_type, ch >= 0);
  std::vector<Attribute> attrs;
  if (ch >= 0) attrs.push_back(int_attr("axis", ch));

  // A shared quantizer applied to the same tensor twice gives one Q/DQ pair.
  const std::string input = g.tensor(x);
  const std::string key = "qdq:" + input + "\n" + scale + "\n" + std::to_string(ch);
  if (const std::string* done = g.cached(key)) {
    g.bind(n.output(), *done);
    return;
  }
  const std::string q = g.add_node1("QuantizeLinear", {input, scale, zero_point}, attrs);
  const std::string y = g.add_node1("DequantizeLinear", {q, scale, zero_point}, attrs);
  g.cache(key, y);
  g.bind(n.output(), y);
}

const at::Tensor& amax_of(const Node& n, GraphBuilder& g) {
  const auto& amax_value = g.constant(n.input(1), "amax");
  TORCH_CHECK(amax_value.isTensor(), GraphBuilder::where(n), ": amax is not a tensor");
  return amax_value.toTensor();
}

void fake_quant_e4m3(const Node& n, GraphBuilder& g) {
  const std::optional<int64_t> axis =
      g.is_none(n.input(2)) ? std::nullopt : std::optional<int64_t>(g.constant_int(n.input(2), "axis"));
  emit_qdq(n, g, amax_of(n, g), axis, 448.0f, at::kFloat8_e4m3fn);
}

void fake_quant(const Node& n, GraphBuilder& g) {
  const at::Tensor& amax = amax_of(n, g);
  const int64_t num_bits = g.constant_int(n.input(2), "num_bits");
  TORCH_CHECK_VALUE(num_bits == 8, GraphBuilder::where(n), ": num_bits=", num_bits,
                    "; opset 13 QuantizeLinear is int8/uint8 only");
  const bool is_unsigned = g.constant_bool(n.input(3), "unsigned");
  const std::optional<int64_t> axis =
      g.is_none(n.input(5)) ? std::nullopt : std::optional<int64_t>(g.constant_int(n.input(5), "axis"));
  emit_qdq(n, g, amax, axis, is_unsigned ? 255.0f : 127.0f, is_unsigned ? at::kByte : at::kChar);
}

}  // namespace

void add_qdq_ops(OpTable& t) {
  t["torchqat::fake_quant"] = fake_quant;
  t["torchqat::fake_quant_e4m3"] = fake_quant_e4m3;
}

}  // namespace torchqat::onnx::detail
