// QuantConvTranspose{1,2,3}d: constructors from torch's options or from a float layer, and forward.
#include "torchqat/nn/quant_conv_transpose.h"

#include "nn/float_module.h"

namespace torchqat::nn {
namespace {

using detail::float_options;

// torch's ConvTranspose{1,2,3}dOptions as the ConvNdOptions its ConvNdImpl holds (what
// ConvTranspose2dImpl's own constructor does).
template <size_t D>
torch::nn::detail::ConvNdOptions<D> nd_options(const torch::nn::ConvTransposeOptions<D>& o) {
  return torch::nn::detail::ConvNdOptions<D>(o.in_channels(), o.out_channels(), o.kernel_size())
      .stride(o.stride())
      .padding(o.padding())
      .dilation(o.dilation())
      .transposed(true)
      .output_padding(o.output_padding())
      .groups(o.groups())
      .bias(o.bias())
      .padding_mode(o.padding_mode());
}


}  // namespace

QuantConvTranspose1dImpl::QuantConvTranspose1dImpl(const torch::nn::ConvTranspose1dOptions& options,
                                                   std::optional<QuantDescriptor> quant_desc_input,
                                                   std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(nd_options<1>(options), std::move(quant_desc_input), std::move(quant_desc_weight)) {}

QuantConvTranspose1dImpl::QuantConvTranspose1dImpl(const torch::nn::ConvTranspose1d& float_module,
                                                   std::optional<QuantDescriptor> quant_desc_input,
                                                   std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(float_options(float_module, kName), std::move(quant_desc_input), std::move(quant_desc_weight)) {
  copy_float_parameters(float_module->weight, float_module->bias);
}

at::Tensor QuantConvTranspose1dImpl::forward(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size) {
  return quant_conv_transpose(input, output_size);
}

QuantConvTranspose2dImpl::QuantConvTranspose2dImpl(const torch::nn::ConvTranspose2dOptions& options,
                                                   std::optional<QuantDescriptor> quant_desc_input,
                                                   std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(nd_options<2>(options), std::move(quant_desc_input), std::move(quant_desc_weight)) {}

QuantConvTranspose2dImpl::QuantConvTranspose2dImpl(const torch::nn::ConvTranspose2d& float_module,
                                                   std::optional<QuantDescriptor> quant_desc_input,
                                                   std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(float_options(float_module, kName), std::move(quant_desc_input), std::move(quant_desc_weight)) {
  copy_float_parameters(float_module->weight, float_module->bias);
}

at::Tensor QuantConvTranspose2dImpl::forward(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size) {
  return quant_conv_transpose(input, output_size);
}

QuantConvTranspose3dImpl::QuantConvTranspose3dImpl(const torch::nn::ConvTranspose3dOptions& options,
                                                   std::optional<QuantDescriptor> quant_desc_input,
                                                   std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(nd_options<3>(options), std::move(quant_desc_input), std::move(quant_desc_weight)) {}

QuantConvTranspose3dImpl::QuantConvTranspose3dImpl(const torch::nn::ConvTranspose3d& float_module,
                                                   std::optional<QuantDescriptor> quant_desc_input,
                                                   std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(float_options(float_module, kName), std::move(quant_desc_input), std::move(quant_desc_weight)) {
  copy_float_parameters(float_module->weight, float_module->bias);
}

at::Tensor QuantConvTranspose3dImpl::forward(const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size) {
  return quant_conv_transpose(input, output_size);
}

}  // namespace torchqat::nn
