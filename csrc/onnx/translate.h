#pragma once
// Internal: a traced TorchScript graph -> the ONNX model (opset 13, IR 7).
#include <torch/csrc/jit/ir/ir.h>

#include <string>
#include <vector>

#include "onnx/module_check.h"
#include "onnx/proto/onnx_model.h"

namespace torchqat::onnx::detail {

// Translates graph node by node (constants folded as the trace recorded them; fake_quant
// kept). input_names / output_names have one name per graph input / output. Throws c10::Error
// naming the first op without a translation.
Model translate_graph(const torch::jit::Graph& graph, const ModuleInfo& info, const std::vector<std::string>& input_names,
                      const std::vector<std::string>& output_names, bool dynamic_batch);

}  // namespace torchqat::onnx::detail
