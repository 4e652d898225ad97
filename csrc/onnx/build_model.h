#pragma once
// Internal: the checked, traced and translated QDQ model export_model writes (shared with the
// implicit-INT8 export, which edits it before writing).
#include <memory>
#include <vector>

#include "onnx/proto/onnx_model.h"
#include "torchqat/onnx/export.h"

namespace torchqat::onnx::detail {

Model build_model(const std::shared_ptr<torch::nn::Module>& module, const ForwardFunction& forward,
                  const std::vector<at::Tensor>& example_inputs, const ExportOptions& options);

}  // namespace torchqat::onnx::detail
