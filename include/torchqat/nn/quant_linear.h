#pragma once
// Quantized fully connected layer: F::linear(input_quantizer(x), weight_quantizer(weight), bias).
//
//   auto fc = torchqat::nn::QuantLinear(torch::nn::LinearOptions(512, 10));
//   auto q = torchqat::nn::QuantLinear(float_linear);  // weights copied from a torch::nn::Linear
//
// Parameters, `options` and initialization are torch::nn::Linear's; the weight quantizer is per
// output row by default (axis 0, amax [out_features, 1]).
#include <torch/nn/modules/linear.h>

#include <optional>
#include <ostream>

#include "torchqat/nn/quant_mixin.h"

namespace torchqat::nn {

class QuantLinearImpl : public torch::nn::Cloneable<QuantLinearImpl>, public QuantMixin {
 public:
  static constexpr const char* kName = "QuantLinear";
  QuantLinearImpl(int64_t in_features, int64_t out_features)
      : QuantLinearImpl(torch::nn::LinearOptions(in_features, out_features)) {}
  // A descriptor left std::nullopt takes the class default at construction.
  explicit QuantLinearImpl(const torch::nn::LinearOptions& options,
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                           std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);
  explicit QuantLinearImpl(const torch::nn::Linear& float_module,
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt,
                           std::optional<QuantDescriptor> quant_desc_weight = std::nullopt);

  void reset() override;
  // torch::nn::Linear's initialization (kaiming uniform weight, uniform bias).
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;
  at::Tensor forward(const at::Tensor& input);

  TensorQuantizer input_quantizer() const override { return input_quantizer_; }
  TensorQuantizer weight_quantizer() const override { return weight_quantizer_; }
  void set_input_quantizer(TensorQuantizer q) override {
    input_quantizer_ = replace_module("_input_quantizer", std::move(q));
  }

  // Class-level defaults: input per tensor, weight per row (axis 0).
  static QuantDescriptor default_quant_desc_input();
  static QuantDescriptor default_quant_desc_weight();
  static void set_default_quant_desc_input(QuantDescriptor desc);
  static void set_default_quant_desc_weight(QuantDescriptor desc);

  torch::nn::LinearOptions options;
  at::Tensor weight;
  at::Tensor bias;  // undefined when options.bias() is false

 private:
  static DefaultQuantDescriptor& input_default();
  static DefaultQuantDescriptor& weight_default();

  QuantDescriptor quant_desc_input_;
  QuantDescriptor quant_desc_weight_;
  TensorQuantizer input_quantizer_{nullptr};
  TensorQuantizer weight_quantizer_{nullptr};
};
TORCH_MODULE(QuantLinear);

}  // namespace torchqat::nn
