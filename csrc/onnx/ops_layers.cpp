// Convolution, linear / matmul and batch norm.
#include <ATen/ATen.h>

#include <algorithm>

#include "onnx/op_table.h"

namespace torchqat::onnx::detail {
namespace {

using torch::jit::Node;

struct ConvArgs {
  const Value* input;
  const Value* weight;
  const Value* bias;
  const Value* stride;
  const Value* padding;  // an int list, or "same" / "valid"
  const Value* dilation;
  const Value* output_padding;  // nullptr: none (plain convolution)
  bool transposed;
  int64_t groups;
};

void emit_conv(const Node& n, GraphBuilder& g, const ConvArgs& a) {
  const auto w = g.shape(a.weight);
  TORCH_CHECK(w.size() >= 3, GraphBuilder::where(n), ": weight of rank ", w.size(), " (expected 3 to 5)");
  const size_t d = w.size() - 2;
  const std::vector<int64_t> kernel(w.begin() + 2, w.end());
  const auto stride = expand_ints(g.constant_ints(a.stride, "stride"), d, n, "stride");
  const auto dilation = expand_ints(g.constant_ints(a.dilation, "dilation"), d, n, "dilation");

  std::vector<int64_t> pads;
  const auto& padding = g.constant(a.padding, "padding");
  if (padding.isString()) {
    const std::string mode = padding.toStringRef();
    TORCH_CHECK(mode == "same" || mode == "valid", GraphBuilder::where(n), ": padding '", mode, "'");
    // torch's "same" puts the odd pad at the end, as ONNX SAME_UPPER; written out explicitly.
    std::vector<int64_t> begin(d, 0), end(d, 0);
    if (mode == "same") {
      for (size_t i = 0; i < d; ++i) {
        const int64_t total = dilation[i] * (kernel[i] - 1);
        begin[i] = total / 2;
        end[i] = total - begin[i];
      }
    }
    pads = begin;
    pads.insert(pads.end(), end.begin(), end.end());
  } else {
    pads = symmetric_pads(expand_ints(g.constant_ints(a.padding, "padding"), d, n, "padding"));
  }

  std::vector<Attribute> attrs{ints_attr("kernel_shape", kernel), ints_attr("strides", stride), ints_attr("pads", pads),
                               ints_attr("dilations", dilation), int_attr("group", a.groups)};
  if (a.transposed && a.output_padding) {
    const auto op = expand_ints(g.constant_ints(a.output_padding, "output_padding"), d, n, "output_padding");
    if (std::any_of(op.begin(), op.end(), [](int64_t v) { return v != 0; })) {
      attrs.push_back(ints_attr("output_padding", op));
    }
  }
  std::vector<std::string> inputs{g.tensor(a.input), g.tensor(a.weight)};
  if (!g.is_none(a.bias)) inputs.push_back(g.tensor(a.bias));
  g.bind(n.output(), g.add_node1(a.transposed ? "ConvTranspose" : "Conv", std::move(inputs), std::move(attrs)));
}

// aten::_convolution / aten::convolution(input, weight, bias, stride, padding, dilation, transposed,
// output_padding, groups, ...)
void convolution(const Node& n, GraphBuilder& g) {
  const bool transposed = g.constant_bool(n.input(6), "transposed");
  emit_conv(n, g,
            {n.input(0), n.input(1), n.input(2), n.input(3), n.input(4), n.input(5), n.input(7), transposed,
             g.constant_int(n.input(8), "groups")});
}

// aten::conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups)
void conv_nd(const Node& n, GraphBuilder& g) {
  emit_conv(n, g,
            {n.input(0), n.input(1), n.input(2), n.input(3), n.input(4), n.input(5), nullptr, false,
             g.constant_int(n.input(6), "groups")});
}

// aten::conv_transpose{1,2,3}d(input, weight, bias, stride, padding, output_padding, groups, dilation)
void conv_transpose_nd(const Node& n, GraphBuilder& g) {
  emit_conv(n, g,
            {n.input(0), n.input(1), n.input(2), n.input(3), n.input(4), n.input(7), n.input(5), true,
             g.constant_int(n.input(6), "groups")});
}

// aten::linear(input, weight, bias): Gemm for 2-d inputs (what TensorRT maps to a fully
// connected layer), else MatMul with the transposed weight, then Add.
void linear(const Node& n, GraphBuilder& g) {
  const std::string x = g.tensor(n.input(0));
  const std::string w = g.tensor(n.input(1));
  const bool has_bias = !g.is_none(n.input(2));
  if (g.shape(n.input(0)).size() == 2) {
    std::vector<std::string> inputs{x, w};
    if (has_bias) inputs.push_back(g.tensor(n.input(2)));
    g.bind(n.output(), g.add_node1("Gemm", std::move(inputs), {int_attr("transB", 1)}));
    return;
  }
  const std::string wt = g.add_node1("Transpose", {w}, {ints_attr("perm", {1, 0})});
  std::string y = g.add_node1("MatMul", {x, wt});
  if (has_bias) y = g.add_node1("Add", {y, g.tensor(n.input(2))});
  g.bind(n.output(), y);
}

// aten::addmm(self, mat1, mat2, beta, alpha) = beta * self + alpha * mat1 @ mat2
void addmm(const Node& n, GraphBuilder& g) {
  g.bind(n.output(), g.add_node1("Gemm", {g.tensor(n.input(1)), g.tensor(n.input(2)), g.tensor(n.input(0))},
                                 {float_attr("beta", static_cast<float>(g.constant_double(n.input(3), "beta"))),
                                  float_attr("alpha", static_cast<float>(g.constant_double(n.input(4), "alpha")))}));
}

void matmul(const Node& n, GraphBuilder& g) {
  g.bind(n.output(), g.add_node1("MatMul", {g.tensor(n.input(0)), g.tensor(n.input(1))}));
}

// aten::batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled)
void batch_norm(const Node& n, GraphBuilder& g) {
  TORCH_CHECK(!g.constant_bool(n.input(5), "training"), GraphBuilder::where(n),
              ": batch norm uses batch statistics in eval mode (track_running_stats=false); ONNX "
              "BatchNormalization needs running statistics");
  TORCH_CHECK(!g.is_none(n.input(3)) && !g.is_none(n.input(4)), GraphBuilder::where(n),
              ": batch norm without running statistics is not exportable");
  const int64_t channels = g.shape(n.input(0)).at(1);
  const auto param = [&](size_t i, float fill, const char* name) {
    return g.is_none(n.input(i)) ? g.add_initializer(at::full({channels}, fill, at::kFloat), name)
                                 : g.tensor(n.input(i));
  };
  const std::string scale = param(1, 1.0f, "bn_scale");
  const std::string bias = param(2, 0.0f, "bn_bias");
  g.bind(n.output(),
         g.add_node1("BatchNormalization",
                     {g.tensor(n.input(0)), scale, bias, g.tensor(n.input(3)), g.tensor(n.input(4))},
                     {float_attr("epsilon", static_cast<float>(g.constant_double(n.input(7), "eps")))}));
}

}  // namespace

void add_layer_ops(OpTable& t) {
  t["aten::_convolution"] = convolution;
  t["aten::convolution"] = convolution;
  for (const char* op : {"aten::conv1d", "aten::conv2d", "aten::conv3d"}) t[op] = conv_nd;
  for (const char* op : {"aten::conv_transpose1d", "aten::conv_transpose2d", "aten::conv_transpose3d"}) {
    t[op] = conv_transpose_nd;
  }
  t["aten::linear"] = linear;
  t["aten::addmm"] = addmm;
  for (const char* op : {"aten::matmul", "aten::mm", "aten::bmm"}) t[op] = matmul;
  t["aten::batch_norm"] = batch_norm;
}

}  // namespace torchqat::onnx::detail
