#pragma once
// QuantAdd: x + y with both inputs fake-quantized, for residual adds. TensorRT fuses such an add
// into the preceding conv only when both inputs are int8 with one scale, hence the default of one
// quantizer shared by both inputs.
//
//   auto add = torchqat::nn::QuantAdd();                                      // one shared quantizer
//   auto add2 = torchqat::nn::QuantAdd(QuantAddOptions().share_quantizer(false));  // one per input
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <ostream>

#include "torchqat/nn/quant_mixin.h"

namespace torchqat::nn {

struct QuantAddOptions {
  // One quantizer for both inputs (same amax, so one scale), or one each.
  TORCH_ARG(bool, share_quantizer) = true;
};

// Submodules: "_input0_quantizer", and "_input1_quantizer" only when not shared. A shared
// quantizer is registered once: LibTorch's parameters() does not deduplicate, so a second
// registration would hand a learned amax to the optimizer twice.
class QuantAddImpl : public torch::nn::Cloneable<QuantAddImpl>, public QuantInputMixin {
 public:
  static constexpr const char* kName = "QuantAdd";
  // A descriptor left std::nullopt takes the class default (per tensor).
  explicit QuantAddImpl(const QuantAddOptions& options = {},
                        std::optional<QuantDescriptor> quant_desc_input = std::nullopt);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& y);

  // The quantizer of x (and of y when shared).
  TensorQuantizer input_quantizer() const override { return input0_quantizer_; }
  TensorQuantizer input0_quantizer() const { return input0_quantizer_; }
  // The quantizer of y: the same object as input0_quantizer() when shared.
  TensorQuantizer input1_quantizer() const { return input1_quantizer_; }
  // Replaces the quantizer of x (of both inputs when shared).
  void set_input_quantizer(TensorQuantizer q) override;
  // Replaces the quantizer of y; c10::Error when shared (set_input_quantizer replaces both).
  void set_input1_quantizer(TensorQuantizer q);

  static QuantDescriptor default_quant_desc_input();
  static void set_default_quant_desc_input(QuantDescriptor desc);

  QuantAddOptions options;

 private:
  static DefaultQuantDescriptor& input_default();

  QuantDescriptor quant_desc_input_;
  TensorQuantizer input0_quantizer_{nullptr};
  TensorQuantizer input1_quantizer_{nullptr};
};
TORCH_MODULE(QuantAdd);

}  // namespace torchqat::nn
