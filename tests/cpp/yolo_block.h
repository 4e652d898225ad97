#pragma once
// A YOLOv7-like block for the scale-sharing tests (test_share_scales.cpp; flow_tool.cpp writes
// its groups for tests/python/test_cpp_flow.py, which builds the same block with torchqat.nn):
// an ELAN-style concat of three conv outputs read by a conv, an MP block (a QuantMaxPool2d -> conv
// branch next to a conv -> strided conv branch on the same tensor) joined by a QuantConcat, and a
// residual QuantAdd (one quantizer per input) of that concat and a conv of it. Input [N, 3, 16, 16].
#include <torch/torch.h>

#include "torchqat/nn/quant_add.h"
#include "torchqat/nn/quant_concat.h"
#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_pooling.h"

namespace torchqat_test {

// QuantConv2d (no bias, "same" padding) + BatchNorm2d + SiLU.
inline torch::nn::Sequential conv_bn_act(int64_t c1, int64_t c2, int64_t k, int64_t s = 1) {
  return torch::nn::Sequential(
      torchqat::nn::QuantConv2d(torch::nn::Conv2dOptions(c1, c2, k).stride(s).padding(k / 2).bias(false)),
      torch::nn::BatchNorm2d(c2), torch::nn::SiLU());
}

struct YoloBlockImpl : torch::nn::Module {
  YoloBlockImpl() {
    namespace tqnn = torchqat::nn;
    cv1 = register_module("cv1", conv_bn_act(3, 8, 1));
    cv2 = register_module("cv2", conv_bn_act(3, 8, 1));
    cv3 = register_module("cv3", conv_bn_act(8, 8, 3));
    out = register_module("out", conv_bn_act(24, 16, 1));
    pool = register_module("pool", tqnn::QuantMaxPool2d(torch::nn::MaxPool2dOptions(2)));
    mp1 = register_module("mp1", conv_bn_act(16, 8, 1));
    mp2 = register_module("mp2", conv_bn_act(16, 8, 1));
    mp3 = register_module("mp3", conv_bn_act(8, 8, 3, 2));
    cat = register_module("cat", tqnn::QuantConcat(tqnn::QuantConcatOptions().dim(1)));
    res = register_module("res", conv_bn_act(16, 16, 3));
    add = register_module("add", tqnn::QuantAdd(tqnn::QuantAddOptions().share_quantizer(false)));
    head = register_module("head", tqnn::QuantConv2d(torch::nn::Conv2dOptions(16, 4, 1)));
  }

  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor a = cv1->forward(x);
    const at::Tensor b = cv2->forward(x);
    const at::Tensor c = cv3->forward(b);
    const at::Tensor y = out->forward(torch::cat({a, b, c}, 1));
    const at::Tensor p = mp1->forward(pool(y));
    const at::Tensor q = mp3->forward(mp2->forward(y));
    const at::Tensor z = cat->forward({p, q});
    return head(add(z, res->forward(z)));
  }

  torch::nn::Sequential cv1{nullptr}, cv2{nullptr}, cv3{nullptr}, out{nullptr}, mp1{nullptr}, mp2{nullptr},
      mp3{nullptr}, res{nullptr};
  torchqat::nn::QuantMaxPool2d pool{nullptr};
  torchqat::nn::QuantConcat cat{nullptr};
  torchqat::nn::QuantAdd add{nullptr};
  torchqat::nn::QuantConv2d head{nullptr};
};
TORCH_MODULE(YoloBlock);

}  // namespace torchqat_test
