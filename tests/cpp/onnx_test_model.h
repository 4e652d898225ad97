#pragma once
// The model of the ONNX export tests (test_onnx_export.cpp and export_tool.cpp; the Python test
// tests/python/test_onnx_cpp_export.py builds the same one with torchqat.nn): a small residual net
// touching every translated layer kind, and max calibration of all its quantizers.
#include <torch/torch.h>

#include <optional>
#include <vector>

#include "torchqat/nn/quant_add.h"
#include "torchqat/nn/quant_concat.h"
#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/nn/quant_pooling.h"
#include "torchqat/tensor_quantizer.h"

namespace torchqat_test {

namespace tqnn = torchqat::nn;

// stem: QuantConv2d+BN+ReLU; residual branch: QuantConv2d+BN+SiLU joined by a QuantAdd; then
// QuantMaxPool2d, nearest Upsample x2, QuantConcat of both scales, global QuantAdaptiveAvgPool2d,
// Flatten and a QuantLinear head. Input [N, 3, 8, 8], output [N, 10]. weight_desc: the descriptor of
// the three weight quantizers (default: the layers' own, 8-bit per channel).
struct TinyResNetImpl : torch::nn::Module {
  explicit TinyResNetImpl(std::optional<torchqat::QuantDescriptor> weight_desc = std::nullopt) {
    using namespace torch::nn;
    stem = register_module(
        "stem", Sequential(tqnn::QuantConv2d(Conv2dOptions(3, 8, 3).padding(1).bias(false), std::nullopt, weight_desc),
                           BatchNorm2d(8), ReLU()));
    branch = register_module(
        "branch", Sequential(tqnn::QuantConv2d(Conv2dOptions(8, 8, 3).padding(1), std::nullopt, weight_desc),
                             BatchNorm2d(8), SiLU()));
    add = register_module("add", tqnn::QuantAdd());
    pool = register_module("pool", tqnn::QuantMaxPool2d(MaxPool2dOptions(2)));
    up = register_module("up", Upsample(UpsampleOptions().scale_factor(std::vector<double>{2.0, 2.0})
                                            .mode(torch::kNearest)));
    cat = register_module("cat", tqnn::QuantConcat(tqnn::QuantConcatOptions().dim(1)));
    gap = register_module("gap", tqnn::QuantAdaptiveAvgPool2d(AdaptiveAvgPool2dOptions(1)));
    flatten = register_module("flatten", Flatten());
    fc = register_module("fc", tqnn::QuantLinear(LinearOptions(16, 10), std::nullopt, weight_desc));
  }

  at::Tensor forward(const at::Tensor& input) {
    const at::Tensor x = stem->forward(input);
    const at::Tensor y = add(x, branch->forward(x));
    const at::Tensor u = up(pool(y));
    return fc(flatten(gap(cat->forward({y, u}))));
  }

  torch::nn::Sequential stem{nullptr}, branch{nullptr};
  tqnn::QuantAdd add{nullptr};
  tqnn::QuantMaxPool2d pool{nullptr};
  torch::nn::Upsample up{nullptr};
  tqnn::QuantConcat cat{nullptr};
  tqnn::QuantAdaptiveAvgPool2d gap{nullptr};
  torch::nn::Flatten flatten{nullptr};
  tqnn::QuantLinear fc{nullptr};
};
TORCH_MODULE(TinyResNet);

inline std::vector<torchqat::TensorQuantizer> quantizers(torch::nn::Module& m) {
  std::vector<torchqat::TensorQuantizer> qs;
  for (const auto& sub : m.modules()) {
    if (auto q = std::dynamic_pointer_cast<torchqat::TensorQuantizerImpl>(sub)) qs.emplace_back(q);
  }
  return qs;
}

// Max calibration: collect statistics over `batches` (quantization off), then load each amax.
template <typename ModuleHolder>
void calibrate(ModuleHolder& model, const std::vector<at::Tensor>& batches) {
  torch::NoGradGuard no_grad;
  for (auto& q : quantizers(*model)) {
    q->disable_quant();
    q->enable_calib();
  }
  for (const auto& x : batches) model->forward(x);
  for (auto& q : quantizers(*model)) {
    q->load_calib_amax();
    q->disable_calib();
    q->enable_quant();
  }
}

// Gives the batch norms non-trivial statistics and affine parameters (a fresh one is the identity).
inline void randomize_batch_norms(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model.modules()) {
    if (auto bn = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(m)) {
      bn->running_mean.uniform_(-0.2, 0.2);
      bn->running_var.uniform_(0.5, 1.5);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
    }
  }
}

}  // namespace torchqat_test
