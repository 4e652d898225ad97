#pragma once
// Scale sharing for TensorRT, the C++ counterpart of torchqat.share_scales (docs/placement.md):
// the quantizers TensorRT needs on one scale become one TensorQuantizer object, so calibration and
// QAT see one amax.
//
//   auto report = torchqat::share_scales(model, {torch::randn({1, 3, 64, 64})});
//   std::cout << report.str();
//
// Rules, found on the graph the ONNX exporter captures (the forward traced once on the example
// inputs, eval mode, no grad; everything restored afterwards). Each puts tensors in one "scale
// domain"; the enabled per-tensor input quantizers reading tensors of a domain are made one:
//   concat:  a cat (torch::cat or QuantConcat) output and all its inputs;
//   maxpool: a max pooling's input and output, when the output's domain is quantized; nearest
//            upsampling, dropout and reshapes (view, flatten, permute, ...) pass scales on the same
//            way, but only extend a domain another rule made;
//   add:     both inputs of an add (tensor + tensor or a QuantAdd).
// A quantizer object already used on several tensors ties their domains. The group's quantizer is
// the one whose settings most members share (then the wider, then the first called); members whose
// settings differ, disabled and per-channel ones are listed in `skipped`. If some were calibrated,
// the shared one keeps the largest amax. Python's "residual" rule (a skip quantizer added with a
// forward hook) has no C++ counterpart: LibTorch has no forward hooks.
//
// A quantizer is replaced through its owner's set_input_quantizer (torchqat's quantized modules); one
// held by a module of another type is skipped with the reason. The shared quantizer is registered
// under each owner's name (state-dict keys as in Python); LibTorch's parameters() does not
// deduplicate, so with learn_amax give the optimizer each amax once. A clone() of the model does
// not keep the sharing: run share_scales on the copy.
#include <ATen/ATen.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "torchqat/onnx/export.h"
#include "torchqat/tensor_quantizer.h"

namespace torchqat {

struct ShareScalesOptions {
  // A subset of "concat", "maxpool", "add".
  TORCH_ARG(std::vector<std::string>, rules) = std::vector<std::string>{"concat", "maxpool", "add"};
  // Report the groups without changing the model.
  TORCH_ARG(bool, dry_run) = false;
};

struct ScaleGroup {
  std::string major;                 // the quantizer the members now are
  std::vector<std::string> members;  // quantizer paths, in call order (major included)
  std::vector<std::string> rules;    // of "concat", "maxpool", "add", "passthrough", "existing"
  TensorQuantizer quantizer{nullptr};
};

struct SharingReport {
  std::vector<ScaleGroup> groups;                            // sorted by major
  std::vector<std::pair<std::string, std::string>> skipped;  // (quantizer path, reason)
  bool applied = true;
  // The group holding a quantizer path, or nullptr.
  const ScaleGroup* group_of(const std::string& quantizer_path) const;
  // As Python's str(SharingReport).
  std::string str() const;
};

// Errors (c10::ValueError): a null module or empty forward, no example inputs, an unknown rule;
// the exporter's trace errors for a forward it cannot trace.
SharingReport share_scales(const std::shared_ptr<torch::nn::Module>& module, const onnx::ForwardFunction& forward,
                           const std::vector<at::Tensor>& example_inputs, const ShareScalesOptions& options = {});

// For a module holder whose forward takes 1 to 4 tensors.
template <typename ModuleType>
SharingReport share_scales(const torch::nn::ModuleHolder<ModuleType>& module,
                           const std::vector<at::Tensor>& example_inputs, const ShareScalesOptions& options = {}) {
  auto impl = module.ptr();
  return share_scales(
      std::static_pointer_cast<torch::nn::Module>(impl),
      [impl](const std::vector<at::Tensor>& in) { return onnx::detail::forward_n(*impl, in); }, example_inputs,
      options);
}

}  // namespace torchqat
