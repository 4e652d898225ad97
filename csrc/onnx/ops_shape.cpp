// Shape ops (flatten, view / reshape, transpose / permute), concatenation, nearest upsampling,
// and the ops that are no-ops in an inference graph.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "onnx/op_table.h"

namespace torchqat::onnx::detail {
namespace {

using torch::jit::Node;

int64_t normalized_dim(int64_t dim, size_t rank, const Node& n) {
  const int64_t r = static_cast<int64_t>(rank);
  TORCH_CHECK(dim >= -r && dim < std::max<int64_t>(r, 1), GraphBuilder::where(n), ": dim ", dim,
              " out of range for rank ", rank);
  return dim < 0 ? dim + r : dim;
}

// Reshape to `target`. With a dynamic batch, a target that keeps the input's leading size takes
// it from the input (ONNX 0: copy that dim) instead of fixing the example's batch size.
void reshape(const Node& n, GraphBuilder& g, std::vector<int64_t> target) {
  const auto in = g.shape(n.input(0));
  if (g.dynamic_batch() && !in.empty() && !target.empty() && target[0] == in[0]) target[0] = 0;
  g.bind(n.output(), g.add_node1("Reshape", {g.tensor(n.input(0)), g.add_int64s(target, "shape")}));
}

// aten::flatten(self, start_dim, end_dim): ONNX Flatten when it is flatten(1, -1) (the
// classifier case; batch-size independent), else a Reshape to the traced output shape.
void flatten(const Node& n, GraphBuilder& g) {
  const size_t rank = g.shape(n.input(0)).size();
  const int64_t start = normalized_dim(g.constant_int(n.input(1), "start_dim"), rank, n);
  const int64_t end = normalized_dim(g.constant_int(n.input(2), "end_dim"), rank, n);
  if (start == 1 && end == static_cast<int64_t>(rank) - 1) {
    g.bind(n.output(), g.add_node1("Flatten", {g.tensor(n.input(0))}, {int_attr("axis", 1)}));
    return;
  }
  reshape(n, g, g.shape(n.output()));
}

void view(const Node& n, GraphBuilder& g) { reshape(n, g, g.constant_ints(n.input(1), "shape")); }

void transpose(const Node& n, GraphBuilder& g) {
  const size_t rank = g.shape(n.input(0)).size();
  std::vector<int64_t> perm(rank);
  for (size_t i = 0; i < rank; ++i) perm[i] = static_cast<int64_t>(i);
  if (n.kind().toQualString() == std::string("aten::t")) {
    if (rank == 2) std::swap(perm[0], perm[1]);
  } else if (n.kind().toQualString() == std::string("aten::permute")) {
    perm = g.constant_ints(n.input(1), "dims");
    for (auto& p : perm) p = normalized_dim(p, rank, n);
  } else {
    std::swap(perm[normalized_dim(g.constant_int(n.input(1), "dim0"), rank, n)],
              perm[normalized_dim(g.constant_int(n.input(2), "dim1"), rank, n)]);
  }
  g.bind(n.output(), g.add_node1("Transpose", {g.tensor(n.input(0))}, {ints_attr("perm", perm)}));
}

// aten::cat(tensors, dim)
void cat(const Node& n, GraphBuilder& g) {
  std::vector<std::string> inputs;
  for (const Value* v : g.list(n.input(0), "tensors")) inputs.push_back(g.tensor(v));
  const int64_t axis = normalized_dim(g.constant_int(n.input(1), "dim"), g.shape(n.output()).size(), n);
  g.bind(n.output(), g.add_node1("Concat", std::move(inputs), {int_attr("axis", axis)}));
}

// aten::upsample_nearest{1,2,3}d(self, output_size, scales...) and its .vec overload
// (input, output_size?, scale_factors?): Resize with torch's index rule, src = floor(dst / scale)
// ("asymmetric" + "floor"). Scales are written when they give the traced output size (they keep
// the batch dynamic); otherwise the output sizes.
void upsample_nearest(const Node& n, GraphBuilder& g) {
  const auto in = g.shape(n.input(0));
  const auto out = g.shape(n.output());
  const size_t d = in.size() - 2;
  std::vector<double> given(d, 0.0);  // 0: not given
  const bool vec_overload = n.maybeSchema() && n.maybeSchema()->overload_name() == "vec";
  if (vec_overload && !g.is_none(n.input(2))) {
    const auto s = g.constant(n.input(2), "scale_factors").toDoubleVector();
    for (size_t i = 0; i < d; ++i) given[i] = s.size() == 1 ? s[0] : s.at(i);
  } else if (!vec_overload) {
    for (size_t i = 0; i < d && 2 + i < n.inputs().size(); ++i) {
      if (!g.is_none(n.input(2 + i))) given[i] = g.constant_double(n.input(2 + i), "scales");
    }
  }
  std::vector<float> scales{1.0f, 1.0f};
  bool scales_exact = true;
  for (size_t i = 0; i < d; ++i) {
    const float s = static_cast<float>(given[i] > 0 ? given[i] : static_cast<double>(out[i + 2]) / in[i + 2]);
    scales.push_back(s);
    scales_exact = scales_exact && static_cast<int64_t>(std::floor(in[i + 2] * s)) == out[i + 2];
  }
  const std::vector<Attribute> attrs{string_attr("mode", "nearest"),
                                     string_attr("coordinate_transformation_mode", "asymmetric"),
                                     string_attr("nearest_mode", "floor")};
  const std::string x = g.tensor(n.input(0));
  if (scales_exact) {
    const std::string s = g.add_initializer(at::tensor(scales, at::kFloat), "resize_scales");
    g.bind(n.output(), g.add_node1("Resize", {x, "", s}, attrs));
    return;
  }
  TORCH_CHECK(!g.dynamic_batch(), GraphBuilder::where(n), ": the output size ", at::IntArrayRef(out),
              " is not the input size times a scale, so Resize needs fixed sizes, which a dynamic batch cannot have");
  g.bind(n.output(), g.add_node1("Resize", {x, "", "", g.add_int64s(out, "resize_sizes")}, attrs));
}

// Ops without effect at inference: the output is the input.
void pass_through(const Node& n, GraphBuilder& g) { g.bind(n.output(), g.tensor(n.input(0))); }

// Dropout in eval mode (train=false) is the identity.
void dropout(const Node& n, GraphBuilder& g) {
  TORCH_CHECK(!g.constant_bool(n.input(2), "train"), GraphBuilder::where(n), ": dropout in training mode");
  pass_through(n, g);
}

}  // namespace

void add_shape_ops(OpTable& t) {
  t["aten::flatten"] = flatten;
  t["aten::view"] = view;
  t["aten::reshape"] = view;
  t["aten::t"] = transpose;
  t["aten::transpose"] = transpose;
  t["aten::permute"] = transpose;
  t["aten::cat"] = cat;
  for (const char* op : {"aten::upsample_nearest1d", "aten::upsample_nearest2d", "aten::upsample_nearest3d"}) {
    t[op] = upsample_nearest;
  }
  for (const char* op : {"aten::contiguous", "aten::clone", "aten::detach", "aten::alias"}) t[op] = pass_through;
  for (const char* op : {"aten::dropout", "aten::feature_dropout", "aten::alpha_dropout"}) t[op] = dropout;
}

}  // namespace torchqat::onnx::detail
