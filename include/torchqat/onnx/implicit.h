#pragma once
// TensorRT implicit INT8 from C++, the counterpart of torchqat.onnx.export_tensorrt_implicit: a
// Q/DQ-free (float) ONNX model plus TensorRT's calibration cache filled from torchqat's amax, so
// TensorRT 8.x (Jetson) builds `trtexec --onnx=model.onnx --int8 --fp16 --calib=model.cache`
// without running its own calibrator.
//
//   auto scales = torchqat::onnx::export_tensorrt_implicit(model, {x}, "model.onnx", "model.cache");
//
// The model is translated as export_model does (QDQ), then every QuantizeLinear -> DequantizeLinear
// pair is removed and its readers read the pair's input again. The tensor each activation Q read is
// a tensor of the float graph; its cache entry is that Q's scale (amax / 127), so tensors that
// shared a quantizer share one value. Weight pairs leave no entry (TensorRT computes weight scales).
// Cache format: the header line, then `name: xxxxxxxx` per tensor (sorted by name), the 8 hex
// digits of the float32 scale's IEEE-754 bits, big-endian.
#include <map>
#include <string>

#include "torchqat/onnx/export.h"

namespace torchqat::onnx {

inline constexpr const char* kDefaultCacheHeader = "TRT-8XXX-EntropyCalibration2";

// Writes onnx_path and cache_path; returns {tensor name: float32 scale}. The errors of
// export_model (an uncalibrated quantizer, ...), and c10::ValueError for a per-channel activation,
// a tensor quantized with two scales, or a header that is not one non-empty line.
std::map<std::string, float> export_tensorrt_implicit(const std::shared_ptr<torch::nn::Module>& module,
                                                      const ForwardFunction& forward,
                                                      const std::vector<at::Tensor>& example_inputs,
                                                      const std::string& onnx_path, const std::string& cache_path,
                                                      const ExportOptions& options = {},
                                                      const std::string& header = kDefaultCacheHeader);

template <typename ModuleType>
std::map<std::string, float> export_tensorrt_implicit(const torch::nn::ModuleHolder<ModuleType>& module,
                                                      const std::vector<at::Tensor>& example_inputs,
                                                      const std::string& onnx_path, const std::string& cache_path,
                                                      const ExportOptions& options = {},
                                                      const std::string& header = kDefaultCacheHeader) {
  auto impl = module.ptr();
  return export_tensorrt_implicit(
      std::static_pointer_cast<torch::nn::Module>(impl),
      [impl](const std::vector<at::Tensor>& in) { return detail::forward_n(*impl, in); }, example_inputs, onnx_path,
      cache_path, options, header);
}

}  // namespace torchqat::onnx
