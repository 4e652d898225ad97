// Activations and binary arithmetic.
#include "onnx/op_table.h"

namespace torchqat::onnx::detail {
namespace {

using torch::jit::Node;

Translator unary(const char* op_type) {
  return [op_type](const Node& n, GraphBuilder& g) { g.bind(n.output(), g.add_node1(op_type, {g.tensor(n.input(0))})); };
}

// x * sigmoid(x): opset 13 has no Swish / SiLU op.
void silu(const Node& n, GraphBuilder& g) {
  const std::string x = g.tensor(n.input(0));
  g.bind(n.output(), g.add_node1("Mul", {x, g.add_node1("Sigmoid", {x})}));
}

void leaky_relu(const Node& n, GraphBuilder& g) {
  const float slope = static_cast<float>(g.constant_double(n.input(1), "negative_slope"));
  g.bind(n.output(), g.add_node1("LeakyRelu", {g.tensor(n.input(0))}, {float_attr("alpha", slope)}));
}

void clip(const Node& n, GraphBuilder& g, float lo, float hi) {
  g.bind(n.output(), g.add_node1("Clip", {g.tensor(n.input(0)), g.add_float_scalar(lo, "clip_min"),
                                          g.add_float_scalar(hi, "clip_max")}));
}

// aten::hardtanh(self, min_val, max_val); ReLU6 is hardtanh(0, 6).
void hardtanh(const Node& n, GraphBuilder& g) {
  clip(n, g, static_cast<float>(g.constant_double(n.input(1), "min_val")),
       static_cast<float>(g.constant_double(n.input(2), "max_val")));
}

// aten::add / aten::sub(self, other, alpha): self +- alpha * other.
Translator add_sub(const char* op_type) {
  return [op_type](const Node& n, GraphBuilder& g) {
    std::string other = g.tensor(n.input(1));
    const double alpha = n.inputs().size() > 2 ? g.constant_double(n.input(2), "alpha") : 1.0;
    if (alpha != 1.0) other = g.add_node1("Mul", {other, g.add_float_scalar(static_cast<float>(alpha), "alpha")});
    g.bind(n.output(), g.add_node1(op_type, {g.tensor(n.input(0)), other}));
  };
}

// aten::mul / aten::div(self, other[, rounding_mode])
Translator mul_div(const char* op_type) {
  return [op_type](const Node& n, GraphBuilder& g) {
    TORCH_CHECK(n.inputs().size() < 3 || g.is_none(n.input(2)), GraphBuilder::where(n),
                ": rounding_mode is not exportable");
    g.bind(n.output(), g.add_node1(op_type, {g.tensor(n.input(0)), g.tensor(n.input(1))}));
  };
}

}  // namespace

void add_elementwise_ops(OpTable& t) {
  t["aten::relu"] = unary("Relu");
  t["aten::sigmoid"] = unary("Sigmoid");
  t["aten::tanh"] = unary("Tanh");
  t["aten::silu"] = silu;
  t["aten::leaky_relu"] = leaky_relu;
  t["aten::hardtanh"] = hardtanh;
  t["aten::relu6"] = [](const Node& n, GraphBuilder& g) { clip(n, g, 0.0f, 6.0f); };
  t["aten::add"] = add_sub("Add");
  t["aten::sub"] = add_sub("Sub");
  t["aten::mul"] = mul_div("Mul");
  t["aten::div"] = mul_div("Div");
}

}  // namespace torchqat::onnx::detail
