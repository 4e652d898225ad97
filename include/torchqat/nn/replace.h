#pragma once
// replace_with_quant_modules: the C++ counterpart of pytorch-quantization's
// quant_modules.initialize() / torchqat.quantize_model(). It walks a torch::nn module tree and
// swaps float layers for their quantized classes in place, weights copied:
//   Conv{1,2,3}d, ConvTranspose{1,2,3}d, Linear, AvgPool{1,2,3}d, AdaptiveAvgPool{1,2,3}d
//   (and MaxPool{1,2,3}d with max_pool(true); pytorch-quantization leaves them float).
//
//   auto replaced = torchqat::nn::replace_with_quant_modules(
//       model, torchqat::nn::ReplaceOptions().exclude({"head*"}));   // keep the detect head float
//
// Which forward sees the new module. A C++ module calls its layers through its own members, so
// a replacement only takes effect where the parent calls its children through the module tree:
// Sequential, ModuleList and ModuleDict are updated (their stored entries, not only the
// registration), and so is a custom module that looks its children up by name. A layer of a custom
// module that is also held elsewhere (typically a `torch::nn::Conv2d conv1` member, which its
// forward would keep calling while the tree held the quantized layer) is an error, raised before
// anything changes; build such modules with the quantized classes directly, or
// exclude them. The root itself is never replaced, and only exact torch types are (not subclasses).
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "torchqat/quant_descriptor.h"

namespace torchqat::nn {

// Descriptors for the layers whose name matches `pattern` (a glob, as in ReplaceOptions).
struct QuantRule {
  /* implicit */ QuantRule(std::string pattern) : pattern_(std::move(pattern)) {}
  TORCH_ARG(std::string, pattern);
  TORCH_ARG(std::optional<QuantDescriptor>, quant_desc_input) = std::nullopt;
  TORCH_ARG(std::optional<QuantDescriptor>, quant_desc_weight) = std::nullopt;
};

// Patterns are globs (fnmatch: `*`, `?`, `[seq]`, `[!seq]`; `*` also crosses dots), as in
// ModelOpt configs, matched against the full dotted module name ("backbone.3.conv"). A pattern
// that matches a module also matches everything under it, so "head" or "head*" selects a whole
// subtree. A pattern that matches no module name at all is reported with a warning.
struct ReplaceOptions {
  // Replace only layers under one of these (empty: all layers).
  TORCH_ARG(std::vector<std::string>, include) = {};
  // Never replace layers under one of these (wins over include).
  TORCH_ARG(std::vector<std::string>, exclude) = {};
  // Also replace MaxPool{1,2,3}d.
  TORCH_ARG(bool, max_pool) = false;
  // Descriptors for every replaced layer; std::nullopt: each class's default. A weight
  // descriptor given here also applies to ConvTranspose layers, whose default is axis 1.
  TORCH_ARG(std::optional<QuantDescriptor>, quant_desc_input) = std::nullopt;
  TORCH_ARG(std::optional<QuantDescriptor>, quant_desc_weight) = std::nullopt;
  // Per-pattern descriptors over the ones above; where several match, the last one wins.
  TORCH_ARG(std::vector<QuantRule>, rules) = {};
};

// Replaces the matching layers under root in place and returns their names, in tree order. A
// layer registered in several places becomes one quantized module registered in the same places.
// Errors (c10::ValueError), raised before the tree is touched: a layer held outside the tree (see
// above); a descriptor invalid for a layer (the message names the layer).
std::vector<std::string> replace_with_quant_modules(const std::shared_ptr<torch::nn::Module>& root,
                                                    const ReplaceOptions& options = {});

template <typename ModuleType>
std::vector<std::string> replace_with_quant_modules(const torch::nn::ModuleHolder<ModuleType>& root,
                                                    const ReplaceOptions& options = {}) {
  return replace_with_quant_modules(std::static_pointer_cast<torch::nn::Module>(root.ptr()), options);
}

}  // namespace torchqat::nn
