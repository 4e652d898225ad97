#include "torchqat/nn/quant_pooling.h"

#include <torch/nn/functional/pooling.h>

#include <sstream>

#include "nn/float_module.h"
#include "nn/output_hooks.h"

namespace torchqat::nn {

namespace F = torch::nn::functional;

template <typename FloatImpl, typename Derived>
QuantPoolImpl<FloatImpl, Derived>::QuantPoolImpl(const Options& options, std::optional<QuantDescriptor> quant_desc_input)
    : options(options),
      quant_desc_input_(quant_desc_input ? std::move(*quant_desc_input) : default_quant_desc_input()) {
  reset();
}

template <typename FloatImpl, typename Derived>
QuantPoolImpl<FloatImpl, Derived>::QuantPoolImpl(const torch::nn::ModuleHolder<FloatImpl>& float_module,
                                                 std::optional<QuantDescriptor> quant_desc_input)
    : QuantPoolImpl(detail::float_options(float_module, Derived::kName), std::move(quant_desc_input)) {}

template <typename FloatImpl, typename Derived>
void QuantPoolImpl<FloatImpl, Derived>::reset() {
  input_quantizer_ = this->register_module(
      "_input_quantizer", make_layer_quantizer(Derived::kName, "quant_desc_input", quant_desc_input_, Derived::kInputRank));
}

template <typename FloatImpl, typename Derived>
void QuantPoolImpl<FloatImpl, Derived>::pretty_print(std::ostream& stream) const {
  // torch's own printout of these options (cheap: pooling modules hold no tensors), under this class's name.
  std::ostringstream base;
  FloatImpl(options).pretty_print(base);
  const std::string s = base.str();
  stream << "torchqat::nn::" << Derived::kName << s.substr(s.find('('));
}

template <typename FloatImpl, typename Derived>
at::Tensor QuantPoolImpl<FloatImpl, Derived>::forward(const at::Tensor& input) {
  at::Tensor y = Derived::pool(input_quantizer_(input), options);
  detail::notify_output(*this, y);
  return y;
}

template <typename FloatImpl, typename Derived>
DefaultQuantDescriptor& QuantPoolImpl<FloatImpl, Derived>::input_default() {
  static DefaultQuantDescriptor d(quant_desc_8bit_per_tensor());
  return d;
}

template <typename FloatImpl, typename Derived>
QuantDescriptor QuantPoolImpl<FloatImpl, Derived>::default_quant_desc_input() {
  return input_default().get();
}

template <typename FloatImpl, typename Derived>
void QuantPoolImpl<FloatImpl, Derived>::set_default_quant_desc_input(QuantDescriptor desc) {
  input_default().set(std::move(desc));
}

at::Tensor QuantMaxPool1dImpl::pool(const at::Tensor& x, const Options& o) { return F::max_pool1d(x, o); }
at::Tensor QuantMaxPool2dImpl::pool(const at::Tensor& x, const Options& o) { return F::max_pool2d(x, o); }
at::Tensor QuantMaxPool3dImpl::pool(const at::Tensor& x, const Options& o) { return F::max_pool3d(x, o); }
at::Tensor QuantAvgPool1dImpl::pool(const at::Tensor& x, const Options& o) { return F::avg_pool1d(x, o); }
at::Tensor QuantAvgPool2dImpl::pool(const at::Tensor& x, const Options& o) { return F::avg_pool2d(x, o); }
at::Tensor QuantAvgPool3dImpl::pool(const at::Tensor& x, const Options& o) { return F::avg_pool3d(x, o); }
at::Tensor QuantAdaptiveAvgPool1dImpl::pool(const at::Tensor& x, const Options& o) {
  return F::adaptive_avg_pool1d(x, o);
}
at::Tensor QuantAdaptiveAvgPool2dImpl::pool(const at::Tensor& x, const Options& o) {
  return F::adaptive_avg_pool2d(x, o);
}
at::Tensor QuantAdaptiveAvgPool3dImpl::pool(const at::Tensor& x, const Options& o) {
  return F::adaptive_avg_pool3d(x, o);
}

template class QuantPoolImpl<torch::nn::MaxPool1dImpl, QuantMaxPool1dImpl>;
template class QuantPoolImpl<torch::nn::MaxPool2dImpl, QuantMaxPool2dImpl>;
template class QuantPoolImpl<torch::nn::MaxPool3dImpl, QuantMaxPool3dImpl>;
template class QuantPoolImpl<torch::nn::AvgPool1dImpl, QuantAvgPool1dImpl>;
template class QuantPoolImpl<torch::nn::AvgPool2dImpl, QuantAvgPool2dImpl>;
template class QuantPoolImpl<torch::nn::AvgPool3dImpl, QuantAvgPool3dImpl>;
template class QuantPoolImpl<torch::nn::AdaptiveAvgPool1dImpl, QuantAdaptiveAvgPool1dImpl>;
template class QuantPoolImpl<torch::nn::AdaptiveAvgPool2dImpl, QuantAdaptiveAvgPool2dImpl>;
template class QuantPoolImpl<torch::nn::AdaptiveAvgPool3dImpl, QuantAdaptiveAvgPool3dImpl>;

}  // namespace torchqat::nn
