#include "onnx/op_table.h"

namespace torchqat::onnx::detail {

const OpTable& op_table() {
  static const OpTable table = [] {
    OpTable t;
    add_layer_ops(t);
    add_pooling_ops(t);
    add_elementwise_ops(t);
    add_shape_ops(t);
    add_qdq_ops(t);
    return t;
  }();
  return table;
}

std::vector<int64_t> expand_ints(std::vector<int64_t> v, size_t spatial, const torch::jit::Node& n, const char* what) {
  if (v.size() == 1 && spatial > 1) v.assign(spatial, v[0]);
  TORCH_CHECK(v.size() == spatial, GraphBuilder::where(n), ": ", what, " has ", v.size(), " values for ", spatial,
              " spatial dims");
  return v;
}

std::vector<int64_t> symmetric_pads(const std::vector<int64_t>& begin) {
  std::vector<int64_t> pads(begin);
  pads.insert(pads.end(), begin.begin(), begin.end());
  return pads;
}

}  // namespace torchqat::onnx::detail
