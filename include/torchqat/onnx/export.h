#pragma once
// QDQ ONNX export from C++: the counterpart of torchqat.onnx.export in Python, for TensorRT.
//
//   torchqat::onnx::export_model(model, {torch::randn({1, 3, 224, 224})}, "model.onnx",
//                                torchqat::onnx::ExportOptions().dynamic_batch(true));
//
// The forward is run once on the example inputs under LibTorch's JIT tracer (in eval mode, no
// grad; training flags and requires_grad are restored afterwards) and the recorded aten graph
// is translated node by node to ONNX opset 13 (IR version 7):
//   - every enabled quantizer becomes QuantizeLinear -> DequantizeLinear: zero point 0 (int8,
//     uint8 when unsigned), fp32 scale = amax / bound, per-channel `axis` from the amax's shape
//     (0 for Conv / Linear weights, 1 for ConvTranspose weights); disabled quantizers emit
//     nothing. Weights are fp32 initializers named as the module's parameters, followed by their
//     Q/DQ pair; scales and zero points are initializers named after the quantizer's module path
//     ("layer1.conv._input_quantizer.scale"), so a shared quantizer has one scale.
//   - narrow-range quantizers export the full int8 range (QuantizeLinear saturates to [-128,
//     127]; only values below -amax differ, see DESIGN.md).
//   - amax == 0 (or amax / bound below the smallest normal float) exports the scale
//     kZeroAmaxScale: TensorRT needs a positive scale and the channel still dequantizes to ~0.
//     Same value as torchqat.onnx.ZERO_AMAX_SCALE in Python.
//   - FP8 E4M3 quantizers (QuantFormat::kE4M3) become the same pair with a FLOAT8E4M3FN zero
//     point and scale amax / 448; a model with one is written at opset 19 (IR version 9).
//   - 4-bit weight quantizers (num_bits 4 on a quantized layer's weight, per channel or per
//     tensor) become the pair with an INT4 zero point (UINT4 unsigned) and scale amax / 7 (15
//     unsigned) on the fp32 weight initializer; a model with one is written at opset 21 (IR
//     version 10). Either raise of the opset warns (TORCH_WARN), naming the first such quantizer.
//   - batch norm exports as BatchNormalization (TensorRT fuses it into the convolution).
//
// Modules it takes: containers (Sequential, ModuleList, ModuleDict, and user modules made of
// children, whose forward is traced), torchqat's quantized modules and TensorQuantizer, and the
// torch::nn leaves Conv{1,2,3}d, ConvTranspose{1,2,3}d, Linear, BatchNorm{1,2,3}d, ReLU,
// ReLU6, Hardtanh, SiLU, Sigmoid, Tanh, LeakyReLU, MaxPool/AvgPool/AdaptiveAvgPool{1,2,3}d,
// Flatten, Upsample (nearest), Identity, Dropout{,2d,3d} and Functional. Inside forward the
// aten ops of those plus add/sub/mul/div, cat, view/reshape, flatten, transpose/permute,
// matmul are translated.
//
// Errors (c10::Error, raised before anything is written): a leaf module of another type (its
// path and type); an enabled quantizer without amax (uncalibrated), in calibration mode, with
// num_bits other than 8, FP8 E4M3 or (weights only) 4, or with a NaN, infinite or negative amax
// (its module path); a parameter,
// buffer or example input that is not float32; an aten op without translation (its name).
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace torchqat::onnx {

// The scale written for a zero amax: 2^-24, a normal fp32 number whose reciprocal is finite
// and exactly representable in fp16 and bf16.
inline constexpr float kZeroAmaxScale = 5.9604644775390625e-08f;
inline constexpr int64_t kOpsetVersion = 13;
inline constexpr int64_t kIrVersion = 7;
// A model with FP8 E4M3 quantizers: QuantizeLinear to FLOAT8E4M3FN needs opset 19 (IR version 9).
inline constexpr int64_t kFp8OpsetVersion = 19;
inline constexpr int64_t kFp8IrVersion = 9;
// A model with 4-bit weight quantizers: QuantizeLinear to INT4 / UINT4 needs opset 21 (IR version 10).
inline constexpr int64_t kInt4OpsetVersion = 21;
inline constexpr int64_t kInt4IrVersion = 10;

struct ExportOptions {
  // Names of the graph inputs / outputs, in order; missing ones default to "input" / "output"
  // (with one input / output) or "input<i>" / "output<i>".
  TORCH_ARG(std::vector<std::string>, input_names) = {};
  TORCH_ARG(std::vector<std::string>, output_names) = {};
  // Dim 0 of every input and output becomes the symbolic "batch"; reshapes that keep the
  // leading dim copy it from their input instead of fixing the example's batch size.
  TORCH_ARG(bool, dynamic_batch) = false;
};

// The traced computation: example inputs in, output tensors out.
using ForwardFunction = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// Exports what `forward` computes with `module`'s parameters, buffers and quantizers. The
// general form, for forwards the template below cannot call (other argument types, more
// inputs).
void export_model(const std::shared_ptr<torch::nn::Module>& module, const ForwardFunction& forward,
                  const std::vector<at::Tensor>& example_inputs, const std::string& path,
                  const ExportOptions& options = {});

namespace detail {

inline std::vector<at::Tensor> to_tensor_list(at::Tensor t) { return {std::move(t)}; }
inline std::vector<at::Tensor> to_tensor_list(std::vector<at::Tensor> ts) { return ts; }
template <typename... Ts>
std::vector<at::Tensor> to_tensor_list(const std::tuple<Ts...>& ts) {
  return std::apply([](const auto&... t) { return std::vector<at::Tensor>{t...}; }, ts);
}

template <typename Impl, size_t... I>
auto call_forward(Impl& m, const std::vector<at::Tensor>& in, std::index_sequence<I...>)
    -> decltype(m.forward(in[I]...)) {
  return m.forward(in[I]...);
}

template <typename Impl, size_t N, typename = void>
struct ForwardTakes : std::false_type {};
template <typename Impl, size_t N>
struct ForwardTakes<Impl, N,
                    std::void_t<decltype(call_forward(std::declval<Impl&>(), std::declval<const std::vector<at::Tensor>&>(),
                                                      std::make_index_sequence<N>()))>> : std::true_type {};

template <typename Impl, size_t N = 1>
std::vector<at::Tensor> forward_n(Impl& m, const std::vector<at::Tensor>& in) {
  if constexpr (N <= 4) {
    if constexpr (ForwardTakes<Impl, N>::value) {
      if (in.size() == N) return to_tensor_list(call_forward(m, in, std::make_index_sequence<N>()));
    }
    return forward_n<Impl, N + 1>(m, in);
  } else {
    TORCH_CHECK_VALUE(false, "torchqat::onnx::export_model: ", m.name(), "::forward does not take ", in.size(),
                      " tensors; pass a ForwardFunction that calls it");
  }
}

}  // namespace detail

// Exports module->forward(example_inputs...), for a forward taking 1 to 4 tensors and returning
// a tensor, a std::vector of tensors or a std::tuple of tensors (Sequential included).
template <typename ModuleType>
void export_model(const torch::nn::ModuleHolder<ModuleType>& module, const std::vector<at::Tensor>& example_inputs,
                  const std::string& path, const ExportOptions& options = {}) {
  auto impl = module.ptr();
  export_model(
      std::static_pointer_cast<torch::nn::Module>(impl),
      [impl](const std::vector<at::Tensor>& in) { return detail::forward_n(*impl, in); }, example_inputs, path,
      options);
}

}  // namespace torchqat::onnx
