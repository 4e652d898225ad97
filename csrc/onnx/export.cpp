// export_model: check the module, trace its forward, translate, write.
#include "torchqat/onnx/export.h"

#include <stdexcept>
#include <unordered_set>

#include "onnx/build_model.h"
#include "onnx/graph_capture.h"
#include "onnx/module_check.h"
#include "onnx/translate.h"

namespace torchqat::onnx {
namespace {

// The requested names, completed with the defaults and checked for clashes.
std::vector<std::string> io_names(const std::vector<std::string>& given, size_t count, const char* what) {
  TORCH_CHECK_VALUE(given.size() <= count, "torchqat::onnx::export_model: ", given.size(), " ", what,
                    " names for ", count, " ", what, "s");
  std::vector<std::string> names(given);
  for (size_t i = names.size(); i < count; ++i) names.push_back(count == 1 ? what : what + std::to_string(i));
  return names;
}

void check_unique(const std::vector<std::string>& inputs, const std::vector<std::string>& outputs) {
  std::unordered_set<std::string> seen;
  for (const auto* list : {&inputs, &outputs}) {
    for (const auto& name : *list) {
      TORCH_CHECK_VALUE(!name.empty(), "torchqat::onnx::export_model: an input or output name is empty");
      TORCH_CHECK_VALUE(seen.insert(name).second, "torchqat::onnx::export_model: the name '", name,
                        "' is given to two inputs / outputs");
    }
  }
}

// The opset the quantizers need: 21 (IR 10) with INT4 weights, else 19 (IR 9) with FP8 E4M3,
// else 13; raised with a warning naming the first quantizer, as Python's torchqat.onnx.export.
void raise_opset(detail::Model& model, const detail::ModuleInfo& info) {
  const bool int4 = !info.int4_quantizers.empty();
  const auto& paths = int4 ? info.int4_quantizers : info.fp8_quantizers;
  if (paths.empty()) return;
  model.opset_version = int4 ? kInt4OpsetVersion : kFp8OpsetVersion;
  model.ir_version = int4 ? kInt4IrVersion : kFp8IrVersion;
  const std::string more = paths.size() > 1 ? " and " + std::to_string(paths.size() - 1) + " more" : "";
  TORCH_WARN("torchqat::onnx::export_model: ", int4 ? "INT4" : "FP8 E4M3", " quantizers ('", paths.front(), "'",
             more, ") need QuantizeLinear to ", int4 ? "INT4" : "FLOAT8E4M3FN", ", so the model is exported at opset ",
             model.opset_version, " instead of ", kOpsetVersion);
}

}  // namespace

namespace detail {

Model build_model(const std::shared_ptr<torch::nn::Module>& module, const ForwardFunction& forward,
                  const std::vector<at::Tensor>& example_inputs, const ExportOptions& options) {
  TORCH_CHECK_VALUE(module != nullptr, "torchqat::onnx::export_model: module is null");
  TORCH_CHECK_VALUE(static_cast<bool>(forward), "torchqat::onnx::export_model: forward is empty");
  TORCH_CHECK_VALUE(!example_inputs.empty(), "torchqat::onnx::export_model: no example inputs");
  for (size_t i = 0; i < example_inputs.size(); ++i) {
    const auto& x = example_inputs[i];
    TORCH_CHECK_VALUE(x.defined() && x.scalar_type() == at::kFloat, "torchqat::onnx::export_model: example input ", i,
                      " must be a float32 tensor", x.defined() ? ", got " + std::string(c10::toString(x.scalar_type())) : "");
    TORCH_CHECK_VALUE(!options.dynamic_batch() || x.dim() > 0, "torchqat::onnx::export_model: dynamic_batch needs a "
                      "batch dim, but example input ", i, " is a scalar");
  }
  const auto input_names = io_names(options.input_names(), example_inputs.size(), "input");

  const detail::ModuleInfo info = detail::check_module(*module);
  const auto graph = detail::capture_graph(*module, forward, example_inputs);
  const auto output_names = io_names(options.output_names(), graph->outputs().size(), "output");
  check_unique(input_names, output_names);

  detail::Model model =
      detail::translate_graph(*graph, info, input_names, output_names, options.dynamic_batch());
  raise_opset(model, info);
  model.producer_name = "torchqat";
  model.producer_version = TORCHQAT_VERSION;
  model.graph_name = "torchqat_export";
  return model;
}

}  // namespace detail

void export_model(const std::shared_ptr<torch::nn::Module>& module, const ForwardFunction& forward,
                  const std::vector<at::Tensor>& example_inputs, const std::string& path, const ExportOptions& options) {
  TORCH_CHECK_VALUE(!path.empty(), "torchqat::onnx::export_model: path is empty");
  const detail::Model model = detail::build_model(module, forward, example_inputs, options);
  try {
    detail::write_model(model, path);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "torchqat::onnx::export_model: ", e.what());
  }
}

}  // namespace torchqat::onnx
