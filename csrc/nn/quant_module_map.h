#pragma once
// Internal: which float torch::nn layer becomes which quantized class (the C++ counterpart of
// pytorch-quantization's _DEFAULT_QUANT_MAP), and how to build one from the other.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>

#include <functional>
#include <memory>
#include <optional>

#include "torchqat/quant_descriptor.h"

namespace torchqat::nn::detail {

// A quantized layer, also wrapped as an AnyModule (what a Sequential stores and calls).
struct QuantReplacement {
  std::shared_ptr<torch::nn::Module> module;
  torch::nn::AnyModule any;
};

struct QuantModuleEntry {
  bool is_max_pool = false;
  // Builds the quantized copy of a float layer of this entry's type; descriptors left
  // std::nullopt take the quantized class's default (pooling ignores the weight descriptor).
  std::function<QuantReplacement(const std::shared_ptr<torch::nn::Module>& float_module,
                                 const std::optional<QuantDescriptor>& quant_desc_input,
                                 const std::optional<QuantDescriptor>& quant_desc_weight)>
      make;
};

// The entry for the module's exact type (a subclass of a torch layer does not match), or nullptr.
const QuantModuleEntry* find_quant_module_entry(const torch::nn::Module& module);

}  // namespace torchqat::nn::detail
