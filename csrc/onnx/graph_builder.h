#pragma once
// Internal: the ONNX graph under construction while the traced graph is translated. It maps
// each TorchScript value to an ONNX tensor name or to a known constant (a value the trace baked
// in: a weight, an amax, an int list), and makes initializers from constants on first use.
#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/ir/ir.h>

#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "onnx/module_check.h"
#include "onnx/proto/onnx_model.h"

namespace torchqat::onnx::detail {

using torch::jit::Node;
using torch::jit::Value;

class GraphBuilder {
 public:
  GraphBuilder(const ModuleInfo& info, bool dynamic_batch);

  Model& model() { return model_; }
  const ModuleInfo& module_info() const { return info_; }
  bool dynamic_batch() const { return dynamic_batch_; }

  // --- TorchScript values ---
  void bind(const Value* v, std::string onnx_name);
  void bind_constant(const Value* v, c10::IValue constant);
  // A list of values that are not all constants (the tensors of a cat).
  void bind_list(const Value* v, std::vector<const Value*> items);
  bool is_constant(const Value* v) const { return constants_.count(v) != 0; }
  bool is_none(const Value* v) const;
  const c10::IValue& constant(const Value* v, const char* what) const;
  int64_t constant_int(const Value* v, const char* what) const;
  double constant_double(const Value* v, const char* what) const;
  bool constant_bool(const Value* v, const char* what) const;
  std::vector<int64_t> constant_ints(const Value* v, const char* what) const;
  const std::vector<const Value*>& list(const Value* v, const char* what) const;
  // The ONNX name holding v's tensor; a constant becomes an initializer (once), named after the
  // module parameter or buffer it is, if any.
  std::string tensor(const Value* v);
  // The traced shape of a tensor value (the example's sizes).
  std::vector<int64_t> shape(const Value* v) const;

  // --- ONNX graph ---
  // A name no other tensor has: base itself, else base_1, base_2, ...
  std::string unique_name(const std::string& base);
  void reserve_name(const std::string& name);
  std::string add_initializer(const at::Tensor& t, const std::string& base_name);
  // An initializer of a type torch has no tensors of (INT4 / UINT4), already serialized.
  std::string add_raw_initializer(DataType dtype, std::vector<int64_t> dims, std::string raw_data,
                                  const std::string& base_name);
  std::string add_int64s(const std::vector<int64_t>& values, const std::string& base_name);
  std::string add_float_scalar(float value, const std::string& base_name);
  // Appends a node and returns its outputs' names (fresh, derived from the op type).
  std::vector<std::string> add_node(const std::string& op_type, std::vector<std::string> inputs,
                                    std::vector<Attribute> attributes = {}, size_t num_outputs = 1);
  std::string add_node1(const std::string& op_type, std::vector<std::string> inputs,
                        std::vector<Attribute> attributes = {}) {
    return add_node(op_type, std::move(inputs), std::move(attributes), 1)[0];
  }

  // A cache translators share across nodes (a Q/DQ pair already emitted for a tensor, a shared
  // quantizer's scale initializer): the cached value for key, or nullptr.
  const std::string* cached(const std::string& key) const {
    auto it = cache_.find(key);
    return it == cache_.end() ? nullptr : &it->second;
  }
  void cache(const std::string& key, std::string value) { cache_[key] = std::move(value); }

  // The error prefix for a node: "torchqat::onnx::export_model: aten::foo".
  static std::string where(const Node& n);

 private:
  const ModuleInfo& info_;
  bool dynamic_batch_;
  Model model_;
  std::unordered_map<const Value*, std::string> names_;
  std::unordered_map<const Value*, c10::IValue> constants_;
  std::unordered_map<const Value*, std::vector<const Value*>> lists_;
  std::unordered_map<const void*, std::string> initializer_of_storage_;
  std::unordered_set<std::string> used_names_;
  std::unordered_map<std::string, int64_t> op_counts_;
  std::unordered_map<std::string, std::string> cache_;
};

}  // namespace torchqat::onnx::detail
