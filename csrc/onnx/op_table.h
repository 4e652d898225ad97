#pragma once
// Internal: the translation of each supported TorchScript op to ONNX opset 13 nodes, keyed by
// the op's qualified name ("aten::relu"). A translator reads the node's inputs from the builder
// (tensor names or constants) and binds every output of the node.
#include <functional>
#include <string>
#include <unordered_map>

#include "onnx/graph_builder.h"

namespace torchqat::onnx::detail {

using Translator = std::function<void(const torch::jit::Node&, GraphBuilder&)>;
using OpTable = std::unordered_map<std::string, Translator>;

// Every translated op (built on first use).
const OpTable& op_table();

// The groups of the table, one file each.
void add_layer_ops(OpTable& table);        // ops_layers.cpp: convolution, linear / matmul, batch norm
void add_pooling_ops(OpTable& table);      // ops_pooling.cpp: max, average, adaptive average
void add_elementwise_ops(OpTable& table);  // ops_elementwise.cpp: activations, add / sub / mul / div
void add_shape_ops(OpTable& table);        // ops_shape.cpp: flatten, reshape, transpose, cat, upsample, no-ops
void add_qdq_ops(OpTable& table);          // qdq.cpp: torchqat::fake_quant, fake_quant_e4m3
// Whether kind is a quantizer op (qdq.cpp): never folded, its Q/DQ pair on a constant weight is
// what TensorRT reads the weight's scale from.
bool is_quantizer_op(const std::string& kind);

// Helpers the groups share.
inline Attribute ints_attr(std::string name, std::vector<int64_t> v) { return {std::move(name), std::move(v)}; }
inline Attribute int_attr(std::string name, int64_t v) { return {std::move(name), v}; }
inline Attribute float_attr(std::string name, float v) { return {std::move(name), v}; }
inline Attribute string_attr(std::string name, std::string v) { return {std::move(name), std::move(v)}; }
// An int list of one element stands for `spatial` equal ones (torch's int[2] accepts `3`).
std::vector<int64_t> expand_ints(std::vector<int64_t> v, size_t spatial, const torch::jit::Node& n, const char* what);
// ONNX `pads`: the begin pads, then the same as end pads.
std::vector<int64_t> symmetric_pads(const std::vector<int64_t>& begin);

}  // namespace torchqat::onnx::detail
