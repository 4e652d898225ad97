#pragma once
// What every quantized module shares: the interfaces tools use to find its quantizers without
// knowing its type, the class-level default descriptors, and the construction-time checks of a
// descriptor against the layer (pytorch-quantization's QuantMixin / QuantInputMixin).
#include <mutex>
#include <string>

#include "torchqat/quant_descriptor.h"
#include "torchqat/tensor_quantizer.h"

namespace torchqat::nn {

// A module with an input quantizer (pooling, add, concat, and all layers with weights). The
// ONNX exporter and tools reach it through dynamic_cast<const QuantInputMixin*>(module.get()).
class QuantInputMixin {
 public:
  virtual ~QuantInputMixin() = default;
  virtual TensorQuantizer input_quantizer() const = 0;
  // Makes q this module's input quantizer (registered under the same name), as Python's
  // `module._input_quantizer = q`: share_scales gives the modules of a group one quantizer
  // object. c10::Error for a module without a replaceable input quantizer (QuantLSTMCell).
  virtual void set_input_quantizer(TensorQuantizer q);
};

// A module that also quantizes its weight (Conv, ConvTranspose, Linear).
class QuantMixin : public QuantInputMixin {
 public:
  virtual TensorQuantizer weight_quantizer() const = 0;
};

// One class-level default descriptor (pytorch-quantization's default_quant_desc_input /
// default_quant_desc_weight class attributes). A mutex because a default may be changed while
// another thread constructs modules.
class DefaultQuantDescriptor {
 public:
  explicit DefaultQuantDescriptor(QuantDescriptor initial) : desc_(std::move(initial)) {}
  QuantDescriptor get() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return desc_;
  }
  // Validates first, so a bad default fails where it is set, not at some later construction.
  void set(QuantDescriptor desc) {
    desc.validate();
    std::lock_guard<std::mutex> lock(mutex_);
    desc_ = std::move(desc);
  }

 private:
  mutable std::mutex mutex_;
  QuantDescriptor desc_;
};

// Builds the quantizer of one tensor of `layer` ("QuantConv2d"); `what` is "quant_desc_input" or
// "quant_desc_weight". tensor_dim >= 0 is the rank of that tensor, and every descriptor axis must
// exist in it; tensor_dim < 0 skips the check (a Linear input has any rank). Modules only do fake
// quantization (their float ops cannot take integer tensors), so fake_quant=false is an error.
TensorQuantizer make_layer_quantizer(const std::string& layer, const char* what, const QuantDescriptor& desc,
                                     int64_t tensor_dim);

}  // namespace torchqat::nn
