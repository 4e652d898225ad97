#pragma once
// Quantized convolutions: F::convNd(input_quantizer(x), weight_quantizer(weight), bias, ...).
//
//   auto conv = torchqat::nn::QuantConv2d(torch::nn::Conv2dOptions(3, 16, 3).padding(1));
//   auto q = torchqat::nn::QuantConv2d(float_conv);  // weights copied from a torch::nn::Conv2d
//
// Weight and bias come from torch::nn::ConvNdImpl, so `options`, parameter names, shapes and
// initialization are torch's; the quantizers add "_input_quantizer._amax" and
// "_weight_quantizer._amax" to the state, pytorch-quantization's keys.
#include <torch/nn/modules/conv.h>

#include <optional>
#include <ostream>
#include <utility>
#include <vector>

#include "torchqat/nn/quant_mixin.h"

namespace torchqat::nn {

// Base of QuantConv{1,2,3}d and QuantConvTranspose{1,2,3}d. Derived supplies kName and
// kTransposed. A descriptor left std::nullopt takes the class default at construction.
template <size_t D, typename Derived>
class QuantConvNdImpl : public torch::nn::ConvNdImpl<D, Derived>, public QuantMixin {
 public:
  QuantConvNdImpl(torch::nn::detail::ConvNdOptions<D> options, std::optional<QuantDescriptor> quant_desc_input,
                  std::optional<QuantDescriptor> quant_desc_weight);

  // Re-creates weight, bias and both quantizers (what torch::nn::Module::clone() relies on).
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  TensorQuantizer input_quantizer() const override { return input_quantizer_; }
  TensorQuantizer weight_quantizer() const override { return weight_quantizer_; }
  void set_input_quantizer(TensorQuantizer q) override {
    input_quantizer_ = this->replace_module("_input_quantizer", std::move(q));
  }

  // Class-level defaults: input per tensor; weight per output channel (axis 0, ConvTranspose
  // axis 1). Each class has its own, as each Python class has its own class attribute.
  static QuantDescriptor default_quant_desc_input();
  static QuantDescriptor default_quant_desc_weight();
  static void set_default_quant_desc_input(QuantDescriptor desc);
  static void set_default_quant_desc_weight(QuantDescriptor desc);

 protected:
  // Takes a float layer's weight and bias (their values, device and dtype) and puts the
  // quantizers on the same device.
  void copy_float_parameters(const at::Tensor& weight, const at::Tensor& bias);
  // conv(input_quantizer(input), weight_quantizer(weight)), padding_mode honoured as torch does.
  at::Tensor quant_conv(const at::Tensor& input);
  // conv_transpose(input_quantizer(input), weight_quantizer(weight)); output_size as torch's.
  at::Tensor quant_conv_transpose(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size);

 private:
  static DefaultQuantDescriptor& input_default();
  static DefaultQuantDescriptor& weight_default();
  void make_quantizers();
  std::vector<int64_t> output_padding(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size) const;

  QuantDescriptor quant_desc_input_;
  QuantDescriptor quant_desc_weight_;
  TensorQuantizer input_quantizer_{nullptr};
  TensorQuantizer weight_quantizer_{nullptr};
};

class QuantConv1dImpl : public QuantConvNdImpl<1, QuantConv1dImpl> {
 public:
  static constexpr const char* kName = "QuantConv1d";
  static constexpr bool kTransposed = false;
  QuantConv1dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<1> kernel_size)
      : QuantConv1dImpl(torch::nn::Conv1dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConv1dImpl(const torch::nn::Conv1dOptions& options,
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                           std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantConv1dImpl(const torch::nn::Conv1d& float_module,
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                           std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  at::Tensor forward(const at::Tensor& input);
};
TORCH_MODULE(QuantConv1d);

class QuantConv2dImpl : public QuantConvNdImpl<2, QuantConv2dImpl> {
 public:
  static constexpr const char* kName = "QuantConv2d";
  static constexpr bool kTransposed = false;
  QuantConv2dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : QuantConv2dImpl(torch::nn::Conv2dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConv2dImpl(const torch::nn::Conv2dOptions& options,
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                           std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantConv2dImpl(const torch::nn::Conv2d& float_module,
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                           std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  at::Tensor forward(const at::Tensor& input);
};
TORCH_MODULE(QuantConv2d);

class QuantConv3dImpl : public QuantConvNdImpl<3, QuantConv3dImpl> {
 public:
  static constexpr const char* kName = "QuantConv3d";
  static constexpr bool kTransposed = false;
  QuantConv3dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<3> kernel_size)
      : QuantConv3dImpl(torch::nn::Conv3dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConv3dImpl(const torch::nn::Conv3dOptions& options,
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                           std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantConv3dImpl(const torch::nn::Conv3d& float_module,
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                           std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  at::Tensor forward(const at::Tensor& input);
};
TORCH_MODULE(QuantConv3d);

}  // namespace torchqat::nn
