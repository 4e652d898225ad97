#pragma once
// QuantConcat: torch::cat of inputs all fake-quantized by one shared quantizer. TensorRT removes
// a concat (writing each input straight into the output) only when every input has the same
// scale, so the inputs never get a quantizer each.
//
//   auto cat = torchqat::nn::QuantConcat(QuantConcatOptions().dim(1));
//   auto y = cat({a, b, c});
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <ostream>
#include <vector>

#include "torchqat/nn/quant_mixin.h"

namespace torchqat::nn {

struct QuantConcatOptions {
  TORCH_ARG(int64_t, dim) = 1;
};

class QuantConcatImpl : public torch::nn::Cloneable<QuantConcatImpl>, public QuantInputMixin {
 public:
  static constexpr const char* kName = "QuantConcat";
  // A descriptor left std::nullopt takes the class default (per tensor).
  explicit QuantConcatImpl(const QuantConcatOptions& options = {},
                           std::optional<QuantDescriptor> quant_desc_input = std::nullopt);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  // Refuses an empty list by name (torch::cat's own message does not say which module).
  at::Tensor forward(const std::vector<at::Tensor>& inputs);

  TensorQuantizer input_quantizer() const override { return input_quantizer_; }
  void set_input_quantizer(TensorQuantizer q) override {
    input_quantizer_ = replace_module("_input_quantizer", std::move(q));
  }

  static QuantDescriptor default_quant_desc_input();
  static void set_default_quant_desc_input(QuantDescriptor desc);

  QuantConcatOptions options;

 private:
  static DefaultQuantDescriptor& input_default();

  QuantDescriptor quant_desc_input_;
  TensorQuantizer input_quantizer_{nullptr};
};
TORCH_MODULE(QuantConcat);

}  // namespace torchqat::nn
