#include "torchqat/nn/quant_concat.h"

#include <ATen/ATen.h>

#include "nn/output_hooks.h"

namespace torchqat::nn {

QuantConcatImpl::QuantConcatImpl(const QuantConcatOptions& options, std::optional<QuantDescriptor> quant_desc_input)
    : options(options),
      quant_desc_input_(quant_desc_input ? std::move(*quant_desc_input) : default_quant_desc_input()) {
  reset();
}

void QuantConcatImpl::reset() {
  input_quantizer_ =
      register_module("_input_quantizer", make_layer_quantizer(kName, "quant_desc_input", quant_desc_input_, -1));
}

void QuantConcatImpl::pretty_print(std::ostream& stream) const {
  stream << "torchqat::nn::QuantConcat(dim=" << options.dim() << ")";
}

at::Tensor QuantConcatImpl::forward(const std::vector<at::Tensor>& inputs) {
  TORCH_CHECK_VALUE(!inputs.empty(), kName, ": inputs is an empty list; give it at least one tensor");
  std::vector<at::Tensor> quantized;
  quantized.reserve(inputs.size());
  for (const auto& t : inputs) quantized.push_back(input_quantizer_(t));
  at::Tensor out = at::cat(quantized, options.dim());
  detail::notify_output(*this, out);
  return out;
}

DefaultQuantDescriptor& QuantConcatImpl::input_default() {
  static DefaultQuantDescriptor d(quant_desc_8bit_per_tensor());
  return d;
}

QuantDescriptor QuantConcatImpl::default_quant_desc_input() { return input_default().get(); }
void QuantConcatImpl::set_default_quant_desc_input(QuantDescriptor desc) { input_default().set(std::move(desc)); }

}  // namespace torchqat::nn
