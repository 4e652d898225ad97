#pragma once
// Internal: what the exporter learns from the module tree before tracing it. The walk rejects
// what cannot be exported (unsupported leaf modules, quantizers without a valid 8-bit amax,
// non-float32 tensors) with errors naming the module path, and records names for the graph.
#include <torch/nn/module.h>

#include <string>
#include <unordered_map>
#include <vector>

namespace torchqat::onnx::detail {

struct ModuleInfo {
  // Storage address of each parameter and buffer -> its dotted name ("layer1.conv.weight"):
  // the traced graph holds them as constants, and their initializers take these names.
  std::unordered_map<const void*, std::string> tensor_names;
  // Storage address of each exported quantizer's amax -> the quantizer's module path
  // ("layer1.conv._weight_quantizer"): names its scale and zero point.
  std::unordered_map<const void*, std::string> quantizer_paths;
  // The module paths of the exported FP8 E4M3 quantizers (the model needs opset 19: QuantizeLinear
  // to FLOAT8E4M3FN) and of the 4-bit weight quantizers (opset 21: INT4 / UINT4), in walk order.
  std::vector<std::string> fp8_quantizers;
  std::vector<std::string> int4_quantizers;
};

// Throws c10::Error (naming the module path) for an unsupported leaf module, for an enabled
// quantizer that is in calibration mode, does real quantization, has no amax, has num_bits other
// than 8, FP8 E4M3 or 4 (4 on the weight quantizer of a quantized layer only),
// has a NaN / infinite / negative amax or an amax over several axes, and for a parameter or
// buffer that is not float32.
ModuleInfo check_module(const torch::nn::Module& root);

}  // namespace torchqat::onnx::detail
