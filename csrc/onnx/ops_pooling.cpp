// Max, average and adaptive average pooling (batched inputs: N, C, spatial...).
#include <algorithm>

#include "onnx/op_table.h"

namespace torchqat::onnx::detail {
namespace {

using torch::jit::Node;

size_t spatial_dims(const Node& n, GraphBuilder& g, size_t expected) {
  const size_t rank = g.shape(n.input(0)).size();
  TORCH_CHECK(rank == expected + 2, GraphBuilder::where(n), ": input of rank ", rank, "; ONNX pooling needs a batched ",
              expected + 2, "-d input");
  return expected;
}

// kernel_shape, strides (empty: the kernel) and pads shared by max and average pooling.
std::vector<Attribute> window_attrs(const Node& n, GraphBuilder& g, size_t d) {
  const auto kernel = expand_ints(g.constant_ints(n.input(1), "kernel_size"), d, n, "kernel_size");
  auto stride = g.constant_ints(n.input(2), "stride");
  stride = stride.empty() ? kernel : expand_ints(stride, d, n, "stride");
  const auto padding = expand_ints(g.constant_ints(n.input(3), "padding"), d, n, "padding");
  return {ints_attr("kernel_shape", kernel), ints_attr("strides", stride), ints_attr("pads", symmetric_pads(padding))};
}

// aten::max_pool{1,2,3}d(self, kernel_size, stride, padding, dilation, ceil_mode)
void max_pool(const Node& n, GraphBuilder& g, size_t d) {
  spatial_dims(n, g, d);
  auto attrs = window_attrs(n, g, d);
  attrs.push_back(ints_attr("dilations", expand_ints(g.constant_ints(n.input(4), "dilation"), d, n, "dilation")));
  attrs.push_back(int_attr("ceil_mode", g.constant_bool(n.input(5), "ceil_mode") ? 1 : 0));
  g.bind(n.output(), g.add_node1("MaxPool", {g.tensor(n.input(0))}, std::move(attrs)));
}

// aten::avg_pool{1,2,3}d(self, kernel_size, stride, padding, ceil_mode, count_include_pad[, divisor_override])
void avg_pool(const Node& n, GraphBuilder& g, size_t d) {
  spatial_dims(n, g, d);
  TORCH_CHECK(n.inputs().size() < 7 || g.is_none(n.input(6)), GraphBuilder::where(n),
              ": divisor_override has no ONNX AveragePool equivalent");
  auto attrs = window_attrs(n, g, d);
  attrs.push_back(int_attr("ceil_mode", g.constant_bool(n.input(4), "ceil_mode") ? 1 : 0));
  attrs.push_back(int_attr("count_include_pad", g.constant_bool(n.input(5), "count_include_pad") ? 1 : 0));
  g.bind(n.output(), g.add_node1("AveragePool", {g.tensor(n.input(0))}, std::move(attrs)));
}

// aten::adaptive_avg_pool{1,2,3}d(self, output_size): GlobalAveragePool for an output of ones,
// else an AveragePool when every input size is a multiple of the output size (the windows are
// then fixed).
void adaptive_avg_pool(const Node& n, GraphBuilder& g, size_t d) {
  spatial_dims(n, g, d);
  const auto in = g.shape(n.input(0));
  const auto out = expand_ints(g.constant_ints(n.input(1), "output_size"), d, n, "output_size");
  const std::string x = g.tensor(n.input(0));
  if (std::all_of(out.begin(), out.end(), [](int64_t s) { return s == 1; })) {
    g.bind(n.output(), g.add_node1("GlobalAveragePool", {x}));
    return;
  }
  std::vector<int64_t> kernel(d);
  for (size_t i = 0; i < d; ++i) {
    const int64_t size = in[i + 2];
    TORCH_CHECK(out[i] > 0 && size % out[i] == 0, GraphBuilder::where(n), ": input size ", size, " is not a multiple of ",
                "output size ", out[i], "; only such adaptive pooling has fixed windows for ONNX");
    kernel[i] = size / out[i];
  }
  g.bind(n.output(), g.add_node1("AveragePool", {x},
                                 {ints_attr("kernel_shape", kernel), ints_attr("strides", kernel),
                                  ints_attr("pads", std::vector<int64_t>(2 * d, 0))}));
}

}  // namespace

void add_pooling_ops(OpTable& t) {
  for (size_t d = 1; d <= 3; ++d) {
    const std::string s = std::to_string(d) + "d";
    t["aten::max_pool" + s] = [d](const Node& n, GraphBuilder& g) { max_pool(n, g, d); };
    t["aten::avg_pool" + s] = [d](const Node& n, GraphBuilder& g) { avg_pool(n, g, d); };
    t["aten::adaptive_avg_pool" + s] = [d](const Node& n, GraphBuilder& g) { adaptive_avg_pool(n, g, d); };
  }
}

}  // namespace torchqat::onnx::detail
