#pragma once
// BatchNorm folding, the C++ counterpart of torchqat.fold_bn:
//
//   w' = w * s,  b' = (b - running_mean) * s + beta,  s = gamma / sqrt(running_var + eps)
//
// (s along the layer's output channels: axis 0 of a Conv / Linear weight, axis 1 of a
// ConvTranspose weight, per group), in float64, rounded once to the parameter dtype, so the result
// is exact to that rounding and equal to Python's fold_bn on the same weights. Eval-mode BN
// semantics (running statistics), as TensorRT does.
//
//   auto folded = torchqat::fold_bn(*model);   // [(conv name, bn name)] of the folded pairs
//
// Pairs are a layer followed by a BatchNorm in a torch::nn::Sequential, anywhere in the tree
// (Sequential's forward is the only order a C++ module tree states; a custom module's forward is
// code). Layers: torch::nn Conv{1,2,3}d, ConvTranspose{1,2,3}d, Linear (with BatchNorm1d) and
// their torchqat::nn quantized classes. The BN becomes torch::nn::Identity in the Sequential; a
// layer without bias gets one. A calibrated per-output-channel weight amax is rescaled by |s| (the
// quantized integers do not change); any other weight amax cannot be, and a warning says it is
// stale. A pair that cannot be folded (BN without running statistics) is left with a warning.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

namespace torchqat {

struct FoldedParameters {
  at::Tensor weight;  // weight's dtype and device
  at::Tensor bias;    // bias's dtype (weight's when there was no bias)
  at::Tensor scale;   // s, float64, one per output channel
};

// The folded weight and bias of one layer. bias, gamma and beta may be undefined (no bias, BN
// without affine). transposed: ConvTranspose weight layout [in, out / groups, ...]. Errors
// (c10::ValueError) name the argument: statistics missing or not one per output channel.
FoldedParameters fold_bn_parameters(const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& running_mean,
                                    const at::Tensor& running_var, const at::Tensor& gamma, const at::Tensor& beta,
                                    double eps, bool transposed = false, int64_t groups = 1);

// Folds bn into layer in place (the parameter tensors keep their identity; a missing bias is
// registered). layer: one of the types above; bn: BatchNorm{1,2,3}d. c10::TypeError for other types.
void fold_conv_bn(torch::nn::Module& layer, torch::nn::Module& bn);

// Folds every pair under module (see above); returns their names in tree order.
std::vector<std::pair<std::string, std::string>> fold_bn(torch::nn::Module& module);

}  // namespace torchqat
