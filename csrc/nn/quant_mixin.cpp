#include "torchqat/nn/quant_mixin.h"

#include <c10/util/Exception.h>

namespace torchqat::nn {

void QuantInputMixin::set_input_quantizer(TensorQuantizer) {
  TORCH_CHECK(false, "set_input_quantizer: this module's input quantizer cannot be replaced");
}

TensorQuantizer make_layer_quantizer(const std::string& layer, const char* what, const QuantDescriptor& desc,
                                     int64_t tensor_dim) {
  desc.validate();
  TORCH_CHECK_VALUE(desc.fake_quant(), layer, ": ", what,
                    " has fake_quant=false; quantized modules only support fake quantization");
  if (desc.axis() && tensor_dim >= 0) {
    for (int64_t a : *desc.axis()) {
      TORCH_CHECK_VALUE(a >= -tensor_dim && a < tensor_dim, layer, ": ", what, " axis ", a,
                        " is out of range for ", (std::string(what) == "quant_desc_weight" ? "a weight" : "an input"),
                        " with ", tensor_dim, " dimensions");
    }
  }
  return TensorQuantizer(desc);
}

}  // namespace torchqat::nn
