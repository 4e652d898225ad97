#pragma once
// Quantized pooling: torch's pooling applied to input_quantizer(x).
//
//   auto pool = torchqat::nn::QuantMaxPool2d(torch::nn::MaxPool2dOptions(2));
//   auto q = torchqat::nn::QuantAvgPool2d(float_avg_pool);  // same options as a torch::nn::AvgPool2d
//
// `options` is the float module's options type; the only state is "_input_quantizer".
#include <torch/nn/modules/pooling.h>

#include <optional>
#include <ostream>
#include <type_traits>
#include <utility>

#include "torchqat/nn/quant_mixin.h"

namespace torchqat::nn {

// Base of the nine quantized pooling classes. FloatImpl is the torch pooling module (its
// options type and printout are reused); Derived supplies kName, kInputRank (the rank of a
// batched input) and a static pool(x, options) that runs the float pooling.
template <typename FloatImpl, typename Derived>
class QuantPoolImpl : public torch::nn::Cloneable<Derived>, public QuantInputMixin {
 public:
  using Options = std::decay_t<decltype(std::declval<FloatImpl>().options)>;

  // A descriptor left std::nullopt takes the class default at construction.
  explicit QuantPoolImpl(const Options& options, std::optional<QuantDescriptor> quant_desc_input = std::nullopt);
  explicit QuantPoolImpl(const torch::nn::ModuleHolder<FloatImpl>& float_module,
                         std::optional<QuantDescriptor> quant_desc_input = std::nullopt);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  at::Tensor forward(const at::Tensor& input);

  TensorQuantizer input_quantizer() const override { return input_quantizer_; }
  void set_input_quantizer(TensorQuantizer q) override {
    input_quantizer_ = this->replace_module("_input_quantizer", std::move(q));
  }

  // Class-level default (per tensor), one per class.
  static QuantDescriptor default_quant_desc_input();
  static void set_default_quant_desc_input(QuantDescriptor desc);

  Options options;

 private:
  static DefaultQuantDescriptor& input_default();

  QuantDescriptor quant_desc_input_;
  TensorQuantizer input_quantizer_{nullptr};
};

#define TORCHQAT_QUANT_POOL(NAME, RANK)                                                        \
  class Quant##NAME##Impl : public QuantPoolImpl<torch::nn::NAME##Impl, Quant##NAME##Impl> { \
   public:                                                                                     \
    static constexpr const char* kName = "Quant" #NAME;                                        \
    static constexpr int64_t kInputRank = RANK;                                                \
    using QuantPoolImpl::QuantPoolImpl;                                                        \
    static at::Tensor pool(const at::Tensor& x, const Options& options);                       \
  };                                                                                           \
  TORCH_MODULE(Quant##NAME)

// The classes differ only in which float pooling they wrap, hence the macro (as torch's own
// TORCH_MODULE): QuantMaxPool{1,2,3}d, QuantAvgPool{1,2,3}d, QuantAdaptiveAvgPool{1,2,3}d.
TORCHQAT_QUANT_POOL(MaxPool1d, 3);
TORCHQAT_QUANT_POOL(MaxPool2d, 4);
TORCHQAT_QUANT_POOL(MaxPool3d, 5);
TORCHQAT_QUANT_POOL(AvgPool1d, 3);
TORCHQAT_QUANT_POOL(AvgPool2d, 4);
TORCHQAT_QUANT_POOL(AvgPool3d, 5);
TORCHQAT_QUANT_POOL(AdaptiveAvgPool1d, 3);
TORCHQAT_QUANT_POOL(AdaptiveAvgPool2d, 4);
TORCHQAT_QUANT_POOL(AdaptiveAvgPool3d, 5);

#undef TORCHQAT_QUANT_POOL

}  // namespace torchqat::nn
