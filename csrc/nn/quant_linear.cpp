#include "torchqat/nn/quant_linear.h"

#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>

#include <cmath>

#include "nn/float_module.h"
#include "nn/output_hooks.h"

namespace torchqat::nn {

QuantLinearImpl::QuantLinearImpl(const torch::nn::LinearOptions& options,
                                 std::optional<QuantDescriptor> quant_desc_input,
                                 std::optional<QuantDescriptor> quant_desc_weight)
    : options(options),
      quant_desc_input_(quant_desc_input ? std::move(*quant_desc_input) : default_quant_desc_input()),
      quant_desc_weight_(quant_desc_weight ? std::move(*quant_desc_weight) : default_quant_desc_weight()) {
  reset();
}

QuantLinearImpl::QuantLinearImpl(const torch::nn::Linear& float_module, std::optional<QuantDescriptor> quant_desc_input,
                                 std::optional<QuantDescriptor> quant_desc_weight)
    : QuantLinearImpl(detail::float_options(float_module, kName), std::move(quant_desc_input),
                      std::move(quant_desc_weight)) {
  torch::NoGradGuard no_grad;
  // clone() keeps the float layer's device and dtype; the quantizers follow its device.
  weight.set_data(float_module->weight.detach().clone());
  if (float_module->bias.defined()) bias.set_data(float_module->bias.detach().clone());
  input_quantizer_->to(weight.device());
  weight_quantizer_->to(weight.device());
}

void QuantLinearImpl::reset() {
  TORCH_CHECK_VALUE(options.in_features() > 0 && options.out_features() > 0, kName,
                    ": in_features and out_features must be positive, got ", options.in_features(), " and ",
                    options.out_features());
  weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty(options.out_features()));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  reset_parameters();
  // The input may have any rank (the features are its last dim), so only the weight's axes are checked.
  input_quantizer_ =
      register_module("_input_quantizer", make_layer_quantizer(kName, "quant_desc_input", quant_desc_input_, -1));
  weight_quantizer_ =
      register_module("_weight_quantizer", make_layer_quantizer(kName, "quant_desc_weight", quant_desc_weight_, 2));
}

void QuantLinearImpl::reset_parameters() {
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5));
  if (bias.defined()) {
    auto [fan_in, fan_out] = torch::nn::init::_calculate_fan_in_and_fan_out(weight);
    const double bound = 1 / std::sqrt(fan_in);
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

void QuantLinearImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "torchqat::nn::QuantLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features() << ", bias=" << options.bias() << ")";
}

at::Tensor QuantLinearImpl::forward(const at::Tensor& input) {
  at::Tensor y = torch::nn::functional::linear(input_quantizer_(input), weight_quantizer_(weight), bias);
  detail::notify_output(*this, y);
  return y;
}

DefaultQuantDescriptor& QuantLinearImpl::input_default() {
  static DefaultQuantDescriptor d(quant_desc_8bit_per_tensor());
  return d;
}

DefaultQuantDescriptor& QuantLinearImpl::weight_default() {
  static DefaultQuantDescriptor d(quant_desc_8bit_weight_per_channel());
  return d;
}

QuantDescriptor QuantLinearImpl::default_quant_desc_input() { return input_default().get(); }
QuantDescriptor QuantLinearImpl::default_quant_desc_weight() { return weight_default().get(); }
void QuantLinearImpl::set_default_quant_desc_input(QuantDescriptor desc) { input_default().set(std::move(desc)); }
void QuantLinearImpl::set_default_quant_desc_weight(QuantDescriptor desc) { weight_default().set(std::move(desc)); }

}  // namespace torchqat::nn
