#include "onnx/translate.h"

#include <algorithm>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "onnx/op_table.h"
#include "torchqat/onnx/export.h"

namespace torchqat::onnx::detail {
namespace {

using torch::jit::Node;

bool all_inputs_constant(const Node& n, const GraphBuilder& g) {
  return std::all_of(n.inputs().begin(), n.inputs().end(), [&](const Value* v) { return g.is_constant(v); });
}

// Nodes computed now rather than exported: those whose inputs are all constants (shape
// arithmetic, a transposed float weight), except the quantizers (int8, INT4 and FP8 alike), whose
// Q/DQ pair on a constant weight is what TensorRT reads the weight's scale from.
bool foldable(const Node& n, const GraphBuilder& g) {
  return !is_quantizer_op(n.kind().toQualString()) && n.blocks().empty() &&
         !n.isNondeterministic() && n.maybeOperator() != nullptr && all_inputs_constant(n, g);
}

// A list of constants (kernel sizes, strides, shapes). prim::ListConstruct has no registered
// operator to run: the interpreter builds lists itself.
void fold_list(const Node& n, GraphBuilder& g) {
  c10::impl::GenericList list(n.output()->type()->expectRef<c10::ListType>().getElementType());
  for (const Value* v : n.inputs()) list.push_back(g.constant(v, "list element"));
  g.bind_constant(n.output(), c10::IValue(std::move(list)));
}

void fold(const Node& n, GraphBuilder& g) {
  torch::jit::Stack stack;
  for (const Value* v : n.inputs()) stack.push_back(g.constant(v, "input"));
  n.getOperation()(stack);
  TORCH_CHECK(stack.size() == n.outputs().size(), GraphBuilder::where(n), ": folding gave ", stack.size(),
              " values for ", n.outputs().size(), " outputs");
  for (size_t i = 0; i < stack.size(); ++i) g.bind_constant(n.output(i), std::move(stack[i]));
}

std::string supported_ops() {
  std::set<std::string> names;
  for (const auto& entry : op_table()) names.insert(entry.first);
  std::ostringstream s;
  for (const auto& name : names) s << (s.tellp() > 0 ? ", " : "") << name;
  return s.str();
}

void translate_node(const Node& n, GraphBuilder& g) {
  const std::string kind = n.kind().toQualString();
  if (kind == "prim::Constant") {
    g.bind_constant(n.output(), *torch::jit::toIValue(n.output()));
    return;
  }
  if (kind == "prim::ListConstruct") {
    if (all_inputs_constant(n, g)) {
      fold_list(n, g);
    } else {
      g.bind_list(n.output(), {n.inputs().begin(), n.inputs().end()});
    }
    return;
  }
  if (foldable(n, g)) {
    fold(n, g);
    return;
  }
  const auto& table = op_table();
  auto it = table.find(kind);
  TORCH_CHECK(it != table.end(), "torchqat::onnx::export_model: the op ", kind,
              " has no ONNX translation; the model's forward may only use the ops of its supported modules (",
              supported_ops(), ")");
  it->second(n, g);
}

ValueInfo value_info(const std::string& name, const std::vector<int64_t>& shape, bool dynamic_batch) {
  ValueInfo info{name, DataType::kFloat, {}};
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i == 0 && dynamic_batch) {
      info.shape.emplace_back(std::string("batch"));
    } else {
      info.shape.emplace_back(shape[i]);
    }
  }
  return info;
}

void check_float(const Value* v, const char* what, size_t index) {
  const auto t = v->type()->cast<c10::TensorType>();
  TORCH_CHECK_VALUE(t && t->scalarType() == at::kFloat, "torchqat::onnx::export_model: ", what, " ", index,
                    " is not a float32 tensor");
}

// Gives the output its requested name: the producing node's output is renamed when that is the
// only place the name appears as a graph output; otherwise an Identity copies it.
void name_output(Model& m, std::string produced, const std::string& wanted, std::unordered_set<std::string>& taken,
                 std::unordered_map<std::string, std::string>& renamed) {
  if (auto r = renamed.find(produced); r != renamed.end()) produced = r->second;
  if (produced == wanted && !taken.count(produced)) {
    taken.insert(produced);
    return;
  }
  auto producer = std::find_if(m.nodes.begin(), m.nodes.end(), [&](const OnnxNode& node) {
    return std::find(node.outputs.begin(), node.outputs.end(), produced) != node.outputs.end();
  });
  if (producer == m.nodes.end() || taken.count(produced)) {
    m.nodes.push_back({"Identity", "Identity_" + wanted, {produced}, {wanted}, {}});
  } else {
    for (auto& node : m.nodes) {
      for (auto& name : node.inputs) name = name == produced ? wanted : name;
      for (auto& name : node.outputs) name = name == produced ? wanted : name;
    }
    renamed[produced] = wanted;
  }
  taken.insert(wanted);
}

}  // namespace

Model translate_graph(const torch::jit::Graph& graph, const ModuleInfo& info, const std::vector<std::string>& input_names,
                      const std::vector<std::string>& output_names, bool dynamic_batch) {
  GraphBuilder g(info, dynamic_batch);
  for (const auto& name : input_names) g.reserve_name(name);
  for (const auto& name : output_names) g.reserve_name(name);

  Model& m = g.model();
  for (size_t i = 0; i < graph.inputs().size(); ++i) {
    const Value* v = graph.inputs()[i];
    check_float(v, "example input", i);
    g.bind(v, input_names[i]);
    m.inputs.push_back(value_info(input_names[i], g.shape(v), dynamic_batch));
  }
  for (const Node* n : graph.nodes()) translate_node(*n, g);

  std::unordered_set<std::string> taken(input_names.begin(), input_names.end());
  std::unordered_map<std::string, std::string> renamed;
  for (size_t i = 0; i < graph.outputs().size(); ++i) {
    const Value* v = graph.outputs()[i];
    check_float(v, "output", i);
    name_output(m, g.tensor(v), output_names[i], taken, renamed);
    m.outputs.push_back(value_info(output_names[i], g.shape(v), dynamic_batch));
  }
  m.ir_version = kIrVersion;
  m.opset_version = kOpsetVersion;
  return std::move(m);
}

}  // namespace torchqat::onnx::detail
