#include "onnx/graph_builder.h"

#include <ATen/ATen.h>

#include <cstring>

namespace torchqat::onnx::detail {
namespace {

DataType onnx_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DataType::kFloat;
    case at::kLong: return DataType::kInt64;
    case at::kChar: return DataType::kInt8;
    case at::kByte: return DataType::kUInt8;
    case at::kFloat8_e4m3fn: return DataType::kFloat8E4M3FN;
    default:
      TORCH_CHECK_VALUE(false, "torchqat::onnx::export_model: a constant tensor of type ", t,
                        " is not exportable (float32, int64, int8 and uint8 are)");
  }
}

}  // namespace

GraphBuilder::GraphBuilder(const ModuleInfo& info, bool dynamic_batch) : info_(info), dynamic_batch_(dynamic_batch) {}

std::string GraphBuilder::where(const Node& n) {
  return std::string("torchqat::onnx::export_model: ") + n.kind().toQualString();
}

void GraphBuilder::bind(const Value* v, std::string onnx_name) { names_[v] = std::move(onnx_name); }

void GraphBuilder::bind_constant(const Value* v, c10::IValue constant) { constants_[v] = std::move(constant); }

void GraphBuilder::bind_list(const Value* v, std::vector<const Value*> items) { lists_[v] = std::move(items); }

bool GraphBuilder::is_none(const Value* v) const {
  auto it = constants_.find(v);
  return it != constants_.end() && it->second.isNone();
}

const c10::IValue& GraphBuilder::constant(const Value* v, const char* what) const {
  auto it = constants_.find(v);
  TORCH_CHECK(it != constants_.end(), where(*v->node()), ": argument ", what,
              " is computed in the graph; it must be a constant for ONNX export");
  return it->second;
}

int64_t GraphBuilder::constant_int(const Value* v, const char* what) const {
  const auto& c = constant(v, what);
  TORCH_CHECK(c.isInt(), where(*v->node()), ": argument ", what, " is not an int");
  return c.toInt();
}

double GraphBuilder::constant_double(const Value* v, const char* what) const {
  const auto& c = constant(v, what);
  TORCH_CHECK(c.isDouble() || c.isInt(), where(*v->node()), ": argument ", what, " is not a number");
  return c.isDouble() ? c.toDouble() : static_cast<double>(c.toInt());
}

bool GraphBuilder::constant_bool(const Value* v, const char* what) const {
  const auto& c = constant(v, what);
  TORCH_CHECK(c.isBool(), where(*v->node()), ": argument ", what, " is not a bool");
  return c.toBool();
}

std::vector<int64_t> GraphBuilder::constant_ints(const Value* v, const char* what) const {
  const auto& c = constant(v, what);
  if (c.isInt()) return {c.toInt()};
  TORCH_CHECK(c.isIntList(), where(*v->node()), ": argument ", what, " is not an int list");
  return c.toIntVector();
}

const std::vector<const Value*>& GraphBuilder::list(const Value* v, const char* what) const {
  auto it = lists_.find(v);
  TORCH_CHECK(it != lists_.end(), where(*v->node()), ": argument ", what, " is not a list built in the graph");
  return it->second;
}

std::string GraphBuilder::tensor(const Value* v) {
  auto it = names_.find(v);
  if (it != names_.end()) return it->second;
  auto c = constants_.find(v);
  TORCH_CHECK(c != constants_.end(), "torchqat::onnx::export_model: internal error: the output of ",
              v->node()->kind().toQualString(), " was used before it was translated");
  std::string name;
  if (c->second.isTensor()) {
    const at::Tensor& t = c->second.toTensor();
    auto param = info_.tensor_names.find(t.data_ptr());
    name = add_initializer(t, param != info_.tensor_names.end() ? param->second : std::string("const"));
  } else if (c->second.isDouble()) {
    name = add_float_scalar(static_cast<float>(c->second.toDouble()), "const");
  } else if (c->second.isInt()) {
    // An int operand of a float op (x * 2): TorchScript promotes it, ONNX needs a float tensor.
    name = add_float_scalar(static_cast<float>(c->second.toInt()), "const");
  } else {
    TORCH_CHECK(false, where(*v->node()), ": a constant of type ", c->second.tagKind(),
                " is used where ONNX needs a tensor");
  }
  names_[v] = name;
  return name;
}

std::vector<int64_t> GraphBuilder::shape(const Value* v) const {
  auto c = constants_.find(v);
  if (c != constants_.end() && c->second.isTensor()) return c->second.toTensor().sizes().vec();
  const auto type = v->type()->cast<c10::TensorType>();
  const auto sizes = type ? type->sizes().concrete_sizes() : std::nullopt;
  TORCH_CHECK(sizes.has_value(), where(*v->node()), ": the shape of its output is unknown");
  return *sizes;
}

void GraphBuilder::reserve_name(const std::string& name) { used_names_.insert(name); }

std::string GraphBuilder::unique_name(const std::string& base) {
  std::string name = base;
  for (int64_t i = 1; used_names_.count(name); ++i) name = base + "_" + std::to_string(i);
  used_names_.insert(name);
  return name;
}

std::string GraphBuilder::add_initializer(const at::Tensor& t, const std::string& base_name) {
  // A parameter read twice (a shared layer) stays one initializer.
  const bool named = info_.tensor_names.count(t.data_ptr()) != 0;
  if (named) {
    auto it = initializer_of_storage_.find(t.data_ptr());
    if (it != initializer_of_storage_.end()) return it->second;
  }
  const at::Tensor c = t.detach().to(at::kCPU).contiguous();
  OnnxTensor init;
  init.name = unique_name(base_name);
  init.dtype = onnx_dtype(c.scalar_type());
  init.dims = c.sizes().vec();
  init.raw_data.assign(static_cast<const char*>(c.data_ptr()), c.nbytes());
  model_.initializers.push_back(std::move(init));
  if (named) initializer_of_storage_[t.data_ptr()] = model_.initializers.back().name;
  return model_.initializers.back().name;
}

std::string GraphBuilder::add_raw_initializer(DataType dtype, std::vector<int64_t> dims, std::string raw_data,
                                              const std::string& base_name) {
  OnnxTensor init;
  init.name = unique_name(base_name);
  init.dtype = dtype;
  init.dims = std::move(dims);
  init.raw_data = std::move(raw_data);
  model_.initializers.push_back(std::move(init));
  return model_.initializers.back().name;
}

std::string GraphBuilder::add_int64s(const std::vector<int64_t>& values, const std::string& base_name) {
  return add_initializer(at::tensor(values, at::kLong), base_name);
}

std::string GraphBuilder::add_float_scalar(float value, const std::string& base_name) {
  return add_initializer(at::scalar_tensor(value, at::kFloat), base_name);
}

std::vector<std::string> GraphBuilder::add_node(const std::string& op_type, std::vector<std::string> inputs,
                                                std::vector<Attribute> attributes, size_t num_outputs) {
  OnnxNode node;
  node.op_type = op_type;
  node.name = op_type + "_" + std::to_string(op_counts_[op_type]++);
  node.inputs = std::move(inputs);
  node.attributes = std::move(attributes);
  for (size_t i = 0; i < num_outputs; ++i) {
    node.outputs.push_back(unique_name(num_outputs == 1 ? node.name : node.name + "_out" + std::to_string(i)));
  }
  model_.nodes.push_back(std::move(node));
  return model_.nodes.back().outputs;
}

}  // namespace torchqat::onnx::detail
