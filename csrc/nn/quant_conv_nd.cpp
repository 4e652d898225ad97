// QuantConvNdImpl, the shared body of the quantized convolutions and transposed convolutions.
// Defined here once and instantiated for the six classes, as torch does for its ConvNdImpl.
#include <c10/util/overloaded.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/padding.h>
#include <torch/nn/modules/utils.h>

#include <sstream>

#include "torchqat/nn/quant_conv.h"

#include "nn/output_hooks.h"
#include "torchqat/nn/quant_conv_transpose.h"

namespace torchqat::nn {
namespace {

namespace F = torch::nn::functional;

// torch's conv padding_mode as the mode of F::pad (zeros never reaches here: it pads in the conv).
F::PadFuncOptions::mode_t pad_mode(const torch::nn::detail::conv_padding_mode_t& mode) {
  return std::visit(c10::overloaded([](torch::enumtype::kZeros) -> F::PadFuncOptions::mode_t { return torch::kConstant; },
                                    [](torch::enumtype::kReflect) -> F::PadFuncOptions::mode_t { return torch::kReflect; },
                                    [](torch::enumtype::kReplicate) -> F::PadFuncOptions::mode_t { return torch::kReplicate; },
                                    [](torch::enumtype::kCircular) -> F::PadFuncOptions::mode_t { return torch::kCircular; }),
                    mode);
}

template <size_t D>
at::Tensor conv_nd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                   const torch::nn::detail::ConvNdOptions<D>& o, const torch::nn::detail::conv_padding_t<D>& padding) {
  if constexpr (D == 1) {
    return F::detail::conv1d(x, w, b, o.stride(), padding, o.dilation(), o.groups());
  } else if constexpr (D == 2) {
    return F::detail::conv2d(x, w, b, o.stride(), padding, o.dilation(), o.groups());
  } else {
    return F::detail::conv3d(x, w, b, o.stride(), padding, o.dilation(), o.groups());
  }
}

template <size_t D>
at::Tensor conv_transpose_nd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                             const torch::nn::detail::ConvNdOptions<D>& o, at::IntArrayRef output_padding) {
  const auto& padding = std::get<torch::ExpandingArray<D>>(o.padding());
  if constexpr (D == 1) {
    return F::detail::conv_transpose1d(x, w, b, o.stride(), padding, output_padding, o.groups(), o.dilation());
  } else if constexpr (D == 2) {
    return F::detail::conv_transpose2d(x, w, b, o.stride(), padding, output_padding, o.groups(), o.dilation());
  } else {
    return F::detail::conv_transpose3d(x, w, b, o.stride(), padding, output_padding, o.groups(), o.dilation());
  }
}

}  // namespace

template <size_t D, typename Derived>
QuantConvNdImpl<D, Derived>::QuantConvNdImpl(torch::nn::detail::ConvNdOptions<D> options,
                                             std::optional<QuantDescriptor> quant_desc_input,
                                             std::optional<QuantDescriptor> quant_desc_weight)
    : torch::nn::ConvNdImpl<D, Derived>(std::move(options)),
      quant_desc_input_(quant_desc_input ? std::move(*quant_desc_input) : default_quant_desc_input()),
      quant_desc_weight_(quant_desc_weight ? std::move(*quant_desc_weight) : default_quant_desc_weight()) {
  // The base constructor created weight and bias; the quantizers need the descriptors first.
  make_quantizers();
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::reset() {
  torch::nn::ConvNdImpl<D, Derived>::reset();
  make_quantizers();
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::make_quantizers() {
  TORCH_CHECK_VALUE(!Derived::kTransposed ||
                        std::holds_alternative<torch::enumtype::kZeros>(this->options.padding_mode()),
                    Derived::kName, ": only padding_mode kZeros is supported, got ",
                    torch::enumtype::get_enum_name(this->options.padding_mode()));
  // Inputs are [N, C, spatial...]; the weight is [Cout, Cin/groups, k...] (transposed: [Cin, Cout/groups, k...]).
  const int64_t rank = static_cast<int64_t>(D) + 2;
  input_quantizer_ = this->register_module(
      "_input_quantizer", make_layer_quantizer(Derived::kName, "quant_desc_input", quant_desc_input_, rank));
  weight_quantizer_ = this->register_module(
      "_weight_quantizer", make_layer_quantizer(Derived::kName, "quant_desc_weight", quant_desc_weight_, rank));
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::pretty_print(std::ostream& stream) const {
  // torch's own printout of the layer's arguments, under this class's name.
  std::ostringstream base;
  torch::nn::ConvNdImpl<D, Derived>::pretty_print(base);
  const std::string s = base.str();
  stream << "torchqat::nn::" << Derived::kName << s.substr(s.find('('));
}

template <size_t D, typename Derived>
DefaultQuantDescriptor& QuantConvNdImpl<D, Derived>::input_default() {
  static DefaultQuantDescriptor d(quant_desc_8bit_per_tensor());
  return d;
}

template <size_t D, typename Derived>
DefaultQuantDescriptor& QuantConvNdImpl<D, Derived>::weight_default() {
  static DefaultQuantDescriptor d(Derived::kTransposed ? quant_desc_8bit_convtranspose_weight_per_channel()
                                                       : quant_desc_8bit_weight_per_channel());
  return d;
}

template <size_t D, typename Derived>
QuantDescriptor QuantConvNdImpl<D, Derived>::default_quant_desc_input() {
  return input_default().get();
}

template <size_t D, typename Derived>
QuantDescriptor QuantConvNdImpl<D, Derived>::default_quant_desc_weight() {
  return weight_default().get();
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::set_default_quant_desc_input(QuantDescriptor desc) {
  input_default().set(std::move(desc));
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::set_default_quant_desc_weight(QuantDescriptor desc) {
  weight_default().set(std::move(desc));
}

template <size_t D, typename Derived>
void QuantConvNdImpl<D, Derived>::copy_float_parameters(const at::Tensor& weight, const at::Tensor& bias) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK_VALUE(weight.sizes() == this->weight.sizes(), Derived::kName, ": float weight shape ", weight.sizes(),
                    " does not match ", this->weight.sizes());
  this->weight.set_data(weight.detach().clone());
  if (bias.defined()) this->bias.set_data(bias.detach().clone());
  input_quantizer_->to(weight.device());
  weight_quantizer_->to(weight.device());
}

template <size_t D, typename Derived>
at::Tensor QuantConvNdImpl<D, Derived>::quant_conv(const at::Tensor& input) {
  const at::Tensor x = input_quantizer_(input);
  const at::Tensor w = weight_quantizer_(this->weight);
  const auto& o = this->options;
  at::Tensor y;
  if (!std::holds_alternative<torch::enumtype::kZeros>(o.padding_mode())) {
    // Non-zero padding is an explicit pad of the (already quantized) input, then an unpadded
    // conv: the same order as torch's Conv and pytorch-quantization's QuantConv.
    const at::Tensor padded =
        F::pad(x, F::PadFuncOptions(this->_reversed_padding_repeated_twice).mode(pad_mode(o.padding_mode())));
    y = conv_nd<D>(padded, w, this->bias, o, torch::ExpandingArray<D>(0));
  } else {
    y = conv_nd<D>(x, w, this->bias, o, o.padding());
  }
  detail::notify_output(*this, y);
  return y;
}

// torch.nn's _ConvTransposeNd._output_padding: output_size picks the output_padding that
// reaches it. Unlike LibTorch's version it counts dilation, as Python's does.
template <size_t D, typename Derived>
std::vector<int64_t> QuantConvNdImpl<D, Derived>::output_padding(
    const at::Tensor& input, const std::optional<at::IntArrayRef>& output_size) const {
  const auto& o = this->options;
  if (!output_size) return std::vector<int64_t>(o.output_padding()->begin(), o.output_padding()->end());
  const int64_t spatial = static_cast<int64_t>(D);
  const int64_t non_spatial = input.dim() == spatial + 2 ? 2 : 1;
  at::IntArrayRef size = *output_size;
  if (static_cast<int64_t>(size.size()) == spatial + non_spatial) size = size.slice(non_spatial);
  TORCH_CHECK_VALUE(static_cast<int64_t>(size.size()) == spatial, Derived::kName, ": output_size must have ", spatial,
                    " or ", spatial + non_spatial, " elements, got ", output_size->size());
  const auto& padding = std::get<torch::ExpandingArray<D>>(o.padding());
  std::vector<int64_t> min_sizes, max_sizes, result;
  for (int64_t d = 0; d < spatial; ++d) {
    const int64_t min_size = (input.size(d + non_spatial) - 1) * (*o.stride())[d] - 2 * (*padding)[d] +
                             (*o.dilation())[d] * ((*o.kernel_size())[d] - 1) + 1;
    min_sizes.push_back(min_size);
    max_sizes.push_back(min_size + (*o.stride())[d] - 1);
  }
  for (int64_t d = 0; d < spatial; ++d) {
    TORCH_CHECK_VALUE(size[d] >= min_sizes[d] && size[d] <= max_sizes[d], Derived::kName,
                      ": requested an output_size of ", size, ", but valid sizes range from ",
                      at::IntArrayRef(min_sizes), " to ", at::IntArrayRef(max_sizes), " (for an input of ",
                      input.sizes().slice(non_spatial), ")");
    result.push_back(size[d] - min_sizes[d]);
  }
  return result;
}

template <size_t D, typename Derived>
at::Tensor QuantConvNdImpl<D, Derived>::quant_conv_transpose(const at::Tensor& input,
                                                             const std::optional<at::IntArrayRef>& output_size) {
  const auto out_pad = output_padding(input, output_size);
  const at::Tensor x = input_quantizer_(input);
  const at::Tensor w = weight_quantizer_(this->weight);
  at::Tensor y = conv_transpose_nd<D>(x, w, this->bias, this->options, out_pad);
  detail::notify_output(*this, y);
  return y;
}

template class QuantConvNdImpl<1, QuantConv1dImpl>;
template class QuantConvNdImpl<2, QuantConv2dImpl>;
template class QuantConvNdImpl<3, QuantConv3dImpl>;
template class QuantConvNdImpl<1, QuantConvTranspose1dImpl>;
template class QuantConvNdImpl<2, QuantConvTranspose2dImpl>;
template class QuantConvNdImpl<3, QuantConvTranspose3dImpl>;

}  // namespace torchqat::nn
