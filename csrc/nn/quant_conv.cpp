// QuantConv{1,2,3}d: constructors from torch's options or from a float layer, and forward.
#include "torchqat/nn/quant_conv.h"

#include "nn/float_module.h"

namespace torchqat::nn {
namespace {

using detail::float_options;

// torch's Conv{1,2,3}dOptions as the ConvNdOptions its ConvNdImpl holds (what Conv2dImpl's
// own constructor does).
template <size_t D>
torch::nn::detail::ConvNdOptions<D> nd_options(const torch::nn::ConvOptions<D>& o) {
  return torch::nn::detail::ConvNdOptions<D>(o.in_channels(), o.out_channels(), o.kernel_size())
      .stride(o.stride())
      .padding(o.padding())
      .dilation(o.dilation())
      .transposed(false)
      .output_padding(0)
      .groups(o.groups())
      .bias(o.bias())
      .padding_mode(o.padding_mode());
}


}  // namespace

QuantConv1dImpl::QuantConv1dImpl(const torch::nn::Conv1dOptions& options, std::optional<QuantDescriptor> quant_desc_input,
                                 std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(nd_options<1>(options), std::move(quant_desc_input), std::move(quant_desc_weight)) {}

QuantConv1dImpl::QuantConv1dImpl(const torch::nn::Conv1d& float_module, std::optional<QuantDescriptor> quant_desc_input,
                                 std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(float_options(float_module, kName), std::move(quant_desc_input), std::move(quant_desc_weight)) {
  copy_float_parameters(float_module->weight, float_module->bias);
}

at::Tensor QuantConv1dImpl::forward(const at::Tensor& input) { return quant_conv(input); }

QuantConv2dImpl::QuantConv2dImpl(const torch::nn::Conv2dOptions& options, std::optional<QuantDescriptor> quant_desc_input,
                                 std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(nd_options<2>(options), std::move(quant_desc_input), std::move(quant_desc_weight)) {}

QuantConv2dImpl::QuantConv2dImpl(const torch::nn::Conv2d& float_module, std::optional<QuantDescriptor> quant_desc_input,
                                 std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(float_options(float_module, kName), std::move(quant_desc_input), std::move(quant_desc_weight)) {
  copy_float_parameters(float_module->weight, float_module->bias);
}

at::Tensor QuantConv2dImpl::forward(const at::Tensor& input) { return quant_conv(input); }

QuantConv3dImpl::QuantConv3dImpl(const torch::nn::Conv3dOptions& options, std::optional<QuantDescriptor> quant_desc_input,
                                 std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(nd_options<3>(options), std::move(quant_desc_input), std::move(quant_desc_weight)) {}

QuantConv3dImpl::QuantConv3dImpl(const torch::nn::Conv3d& float_module, std::optional<QuantDescriptor> quant_desc_input,
                                 std::optional<QuantDescriptor> quant_desc_weight)
    : QuantConvNdImpl(float_options(float_module, kName), std::move(quant_desc_input), std::move(quant_desc_weight)) {
  copy_float_parameters(float_module->weight, float_module->bias);
}

at::Tensor QuantConv3dImpl::forward(const at::Tensor& input) { return quant_conv(input); }

}  // namespace torchqat::nn
