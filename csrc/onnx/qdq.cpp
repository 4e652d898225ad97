// torchqat::fake_quant(x, amax, num_bits, unsigned, narrow_range, axis) -> QuantizeLinear ->
// DequantizeLinear, the rules of DESIGN.md's Export bullet and of Python's symbolic.py (int8 /
// uint8 zero points, or INT4 / UINT4 for 4-bit weights, opset 21); and
// torchqat::fake_quant_e4m3(x, amax, axis) -> the same pair with a FLOAT8E4M3FN zero point.
#include <ATen/ATen.h>

#include "onnx/op_table.h"
#include "torchqat/onnx/export.h"
#include "torchqat/quant_rules.h"

namespace torchqat::onnx::detail {
namespace {

using torch::jit::Node;

// The axis of x an amax belongs to, or -1 for one amax: a 1-d amax of C elements goes with the
// op's axis argument, a broadcast-shaped one ([K,1,1,1], [1,C,1,1]) with its one dim > 1.
int64_t channel_axis(const Node& n, const at::Tensor& amax, std::optional<int64_t> axis, int64_t rank) {
  if (amax.numel() == 1) return -1;
  if (amax.dim() == 1) {
    TORCH_CHECK(axis.has_value(), GraphBuilder::where(n), ": a per-channel amax of ", amax.numel(),
                " elements without an axis");
    return *axis < 0 ? *axis + rank : *axis;
  }
  const std::vector<int64_t> axes = amax_axes(amax.sym_sizes());
  TORCH_CHECK(axes.size() == 1, GraphBuilder::where(n), ": an amax of shape ", amax.sizes(),
              "; ONNX Q/DQ has one quantization axis");
  const int64_t inferred = axes[0] + (rank - amax.dim());
  TORCH_CHECK(!axis || (*axis < 0 ? *axis + rank : *axis) == inferred, GraphBuilder::where(n), ": axis ", *axis,
              " does not match the amax of shape ", amax.sizes());
  return inferred;
}

// The serialized zeros of a zero point of `numel` elements of type t (4-bit types pack two per byte).
std::string zeros(DataType t, int64_t numel) {
  const bool packed = t == DataType::kInt4 || t == DataType::kUInt4;
  return std::string(static_cast<size_t>(packed ? (numel + 1) / 2 : numel), '\0');
}

// The scale and zero point initializers of one amax (made once: a shared quantizer has one).
// bound: 127, 255 (unsigned), 7 / 15 (4 bits) or 448 (FP8); zp_type: int8, uint8, INT4, UINT4 or
// FLOAT8E4M3FN.
std::pair<std::string, std::string> scale_and_zero_point(GraphBuilder& g, const at::Tensor& amax, float bound,
                                                         DataType zp_type, bool per_channel) {
  const std::string key = "qdq-params:" + std::to_string(reinterpret_cast<uintptr_t>(amax.data_ptr())) + ":" +
                          std::to_string(static_cast<int32_t>(zp_type)) + (per_channel ? ":c" : ":t");
  if (const std::string* cached = g.cached(key)) {
    const auto sep = cached->find('\n');
    return {cached->substr(0, sep), cached->substr(sep + 1)};
  }
  const auto path = g.module_info().quantizer_paths.find(amax.data_ptr());
  const std::string base =
      path != g.module_info().quantizer_paths.end() && !path->second.empty() ? path->second : std::string("quantizer");

  // scale = amax / bound in fp32, as the fake-quant op's step.
  at::Tensor scale = qdq_scale(amax, bound, kZeroAmaxScale).flatten();
  if (!per_channel) scale = scale.reshape({});
  std::pair<std::string, std::string> names{
      g.add_initializer(scale, base + ".scale"),
      g.add_raw_initializer(zp_type, scale.sizes().vec(), zeros(zp_type, scale.numel()), base + ".zero_point")};
  g.cache(key, names.first + "\n" + names.second);
  return names;
}

// The Q/DQ pair of x with the amax constant (checked finite and >= 0).
void emit_qdq(const Node& n, GraphBuilder& g, const at::Tensor& amax, std::optional<int64_t> axis, float bound,
              DataType zp_type) {
  const Value* x = n.input(0);
  check_amax(GraphBuilder::where(n).c_str(), amax);

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
  emit_qdq(n, g, amax_of(n, g), axis, 448.0f, DataType::kFloat8E4M3FN);
}

void fake_quant(const Node& n, GraphBuilder& g) {
  const at::Tensor& amax = amax_of(n, g);
  const int64_t num_bits = g.constant_int(n.input(2), "num_bits");
  // 4 bits: the weight quantizers module_check let through (INT4 weights, opset 21).
  TORCH_CHECK_VALUE(num_bits == 8 || num_bits == 4, GraphBuilder::where(n), ": num_bits=", num_bits,
                    "; QuantizeLinear is int8/uint8, or INT4 for weights");
  const bool is_unsigned = g.constant_bool(n.input(3), "unsigned");
  const std::optional<int64_t> axis =
      g.is_none(n.input(5)) ? std::nullopt : std::optional<int64_t>(g.constant_int(n.input(5), "axis"));
  const float bound = static_cast<float>(quant_bound(num_bits, is_unsigned));
  const DataType zp_type = num_bits == 4 ? (is_unsigned ? DataType::kUInt4 : DataType::kInt4)
                                         : (is_unsigned ? DataType::kUInt8 : DataType::kInt8);
  emit_qdq(n, g, amax, axis, bound, zp_type);
}

// The quantizer ops: each becomes a Q/DQ pair, also on a constant (a weight).
const std::pair<const char*, Translator> kQuantizerOps[] = {
    {"torchqat::fake_quant", fake_quant},
    {"torchqat::fake_quant_e4m3", fake_quant_e4m3},
};

}  // namespace

bool is_quantizer_op(const std::string& kind) {
  for (const auto& op : kQuantizerOps) {
    if (kind == op.first) return true;
  }
  return false;
}

void add_qdq_ops(OpTable& t) {
  for (const auto& op : kQuantizerOps) t[op.first] = op.second;
}

}  // namespace torchqat::onnx::detail
