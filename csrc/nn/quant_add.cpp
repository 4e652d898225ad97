#include "torchqat/nn/quant_add.h"

#include "nn/output_hooks.h"

namespace torchqat::nn {

QuantAddImpl::QuantAddImpl(const QuantAddOptions& options, std::optional<QuantDescriptor> quant_desc_input)
    : options(options),
      quant_desc_input_(quant_desc_input ? std::move(*quant_desc_input) : default_quant_desc_input()) {
  reset();
}

void QuantAddImpl::reset() {
  // Either input may have any rank, so descriptor axes are checked by the quantizer at forward.
  input0_quantizer_ =
      register_module("_input0_quantizer", make_layer_quantizer(kName, "quant_desc_input", quant_desc_input_, -1));
  if (options.share_quantizer()) {
    input1_quantizer_ = input0_quantizer_;
  } else {
    input1_quantizer_ =
        register_module("_input1_quantizer", make_layer_quantizer(kName, "quant_desc_input", quant_desc_input_, -1));
  }
}

void QuantAddImpl::set_input_quantizer(TensorQuantizer q) {
  input0_quantizer_ = replace_module("_input0_quantizer", std::move(q));
  if (options.share_quantizer()) input1_quantizer_ = input0_quantizer_;
}

void QuantAddImpl::set_input1_quantizer(TensorQuantizer q) {
  TORCH_CHECK(!options.share_quantizer(), kName, ": set_input1_quantizer on a QuantAdd whose inputs share one "
              "quantizer (share_quantizer=true); set_input_quantizer replaces it for both");
  input1_quantizer_ = replace_module("_input1_quantizer", std::move(q));
}

void QuantAddImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "torchqat::nn::QuantAdd(share_quantizer=" << options.share_quantizer() << ")";
}

at::Tensor QuantAddImpl::forward(const at::Tensor& x, const at::Tensor& y) {
  // x before y, as in Python: the operands of + are unsequenced in C++ (GCC ran y first), and a
  // shared histogram calibrator's range depends on the order it sees data in.
  const at::Tensor qx = input0_quantizer_(x);
  const at::Tensor qy = input1_quantizer_(y);
  at::Tensor out = qx + qy;
  detail::notify_output(*this, out);
  return out;
}

DefaultQuantDescriptor& QuantAddImpl::input_default() {
  static DefaultQuantDescriptor d(quant_desc_8bit_per_tensor());
  return d;
}

QuantDescriptor QuantAddImpl::default_quant_desc_input() { return input_default().get(); }
void QuantAddImpl::set_default_quant_desc_input(QuantDescriptor desc) { input_default().set(std::move(desc)); }

}  // namespace torchqat::nn
