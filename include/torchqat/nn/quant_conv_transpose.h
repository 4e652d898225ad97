#pragma once
// Quantized transposed convolutions: F::conv_transposeNd(input_quantizer(x),
// weight_quantizer(weight), bias, ...). The weight is [Cin, Cout/groups, k...], so the default
// weight quantizer is per output channel on axis 1 (amax shaped [1, Cout, 1, 1] for 2d), as in
// pytorch-quantization 2.2 and as the QDQ export's `axis=1` expects.
#include "torchqat/nn/quant_conv.h"

namespace torchqat::nn {

class QuantConvTranspose1dImpl : public QuantConvNdImpl<1, QuantConvTranspose1dImpl> {
 public:
  static constexpr const char* kName = "QuantConvTranspose1d";
  static constexpr bool kTransposed = true;
  QuantConvTranspose1dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<1> kernel_size)
      : QuantConvTranspose1dImpl(torch::nn::ConvTranspose1dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConvTranspose1dImpl(const torch::nn::ConvTranspose1dOptions& options,
                                    std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                                    std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantConvTranspose1dImpl(const torch::nn::ConvTranspose1d& float_module,
                                    std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                                    std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  at::Tensor forward(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size = std::nullopt);

 protected:
  // Lets Sequential / AnyModule call forward(input) alone, as with torch::nn::ConvTranspose1d.
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(std::optional<at::IntArrayRef>())})
};
TORCH_MODULE(QuantConvTranspose1d);

class QuantConvTranspose2dImpl : public QuantConvNdImpl<2, QuantConvTranspose2dImpl> {
 public:
  static constexpr const char* kName = "QuantConvTranspose2d";
  static constexpr bool kTransposed = true;
  QuantConvTranspose2dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : QuantConvTranspose2dImpl(torch::nn::ConvTranspose2dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConvTranspose2dImpl(const torch::nn::ConvTranspose2dOptions& options,
                                    std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                                    std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantConvTranspose2dImpl(const torch::nn::ConvTranspose2d& float_module,
                                    std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                                    std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  at::Tensor forward(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size = std::nullopt);

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(std::optional<at::IntArrayRef>())})
};
TORCH_MODULE(QuantConvTranspose2d);

class QuantConvTranspose3dImpl : public QuantConvNdImpl<3, QuantConvTranspose3dImpl> {
 public:
  static constexpr const char* kName = "QuantConvTranspose3d";
  static constexpr bool kTransposed = true;
  QuantConvTranspose3dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<3> kernel_size)
      : QuantConvTranspose3dImpl(torch::nn::ConvTranspose3dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConvTranspose3dImpl(const torch::nn::ConvTranspose3dOptions& options,
                                    std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                                    std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantConvTranspose3dImpl(const torch::nn::ConvTranspose3d& float_module,
                                    std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                                    std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  at::Tensor forward(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size = std::nullopt);

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(std::optional<at::IntArrayRef>())})
};
TORCH_MODULE(QuantConvTranspose3d);

}  // namespace torchqat::nn
