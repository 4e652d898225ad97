// The C++ quantized modules: bit-exact forward against the float ops on fake-quantized tensors,
// state keys, serialization, construction from float layers, defaults and descriptor errors.
#include "catch_torch.h"
#include <torch/torch.h>

#include <sstream>

#include "torchqat/nn/quant_add.h"
#include "torchqat/nn/quant_concat.h"
#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_conv_transpose.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/nn/quant_pooling.h"
#include "reference.h"
#include "torchqat/ops.h"

namespace F = torch::nn::functional;
namespace tqnn = torchqat::nn;
using torchqat::fake_quant;
using torchqat::QuantDescriptor;

namespace {

// Per-channel amax of a weight along `axis`, kept broadcastable ([K,1,1,1]; [1,K,1,1] for axis 1).
at::Tensor channel_amax(const at::Tensor& w, int64_t axis) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < w.dim(); ++d) {
    if (d != axis) dims.push_back(d);
  }
  return w.detach().abs().amax(dims, /*keepdim=*/true);
}

std::vector<std::string> keys(const torch::OrderedDict<std::string, at::Tensor>& d) { return d.keys(); }

}  // namespace

TEST_CASE("QuantConv2d equals conv2d of the fake-quantized input and weight, bit for bit", "[nn]") {
  torch::manual_seed(0);
  tqnn::QuantConv2d conv(torch::nn::Conv2dOptions(4, 6, 3).stride(2).padding(1).groups(2));
  auto x = torch::randn({2, 4, 9, 9}) * 2;
  const auto a_in = torch::tensor(2.5f);
  const auto a_w = channel_amax(conv->weight, 0) * 0.8;  // some weights clip
  conv->input_quantizer()->set_amax(a_in);
  conv->weight_quantizer()->set_amax(a_w);

  auto ref = F::conv2d(fake_quant(x, a_in), fake_quant(conv->weight, a_w, 8, false, false, 0),
                       F::Conv2dFuncOptions().bias(conv->bias).stride(2).padding(1).groups(2));
  REQUIRE(torch::equal(conv(x), ref));

  SECTION("dynamic (no amax) quantizers use the abs-max of each call") {
    tqnn::QuantConv2d dyn(torch::nn::Conv2dOptions(4, 6, 3));
    auto w = dyn->weight;
    auto dref = F::conv2d(fake_quant(x, x.abs().max()), fake_quant(w, channel_amax(w, 0), 8, false, false, 0),
                          F::Conv2dFuncOptions().bias(dyn->bias));
    REQUIRE(torch::equal(dyn(x), dref));
  }
  SECTION("gradients of the weight and the input equal autograd of the STE reference") {
    torch::manual_seed(4);
    auto xg = x.clone().requires_grad_();
    const auto g = torch::randn_like(conv(x));
    conv(xg).backward(g);
    // The reference: conv2d of tests/cpp/reference.h's ste_fake_quant (ATen's fake-quant forward,
    // clamp's gradient) on copies of x and the weight.
    auto xr = x.clone().requires_grad_();
    auto wr = conv->weight.detach().clone().requires_grad_();
    F::conv2d(torchqat_test::ste_fake_quant(xr, a_in), torchqat_test::ste_fake_quant(wr, a_w, 0),
              F::Conv2dFuncOptions().bias(conv->bias.detach()).stride(2).padding(1).groups(2))
        .backward(g);
    // Same forward values and the same conv backward: equal up to float summation order.
    REQUIRE(torch::allclose(xg.grad(), xr.grad(), 1e-5, 1e-6));
    REQUIRE(torch::allclose(conv->weight.grad(), wr.grad(), 1e-5, 1e-6));
    REQUIRE(xr.grad().abs().sum().item<float>() > 0);  // some inputs lie inside the clip range ...
    REQUIRE((xr.grad() == 0).any().item<bool>());       // ... and some outside (|x| > 2.5)
  }
}

TEST_CASE("QuantConv1d / QuantConv3d and a reflect-padded QuantConv2d equal the float ops", "[nn]") {
  torch::manual_seed(1);
  const auto a = torch::tensor(1.5f);
  {
    tqnn::QuantConv1d c(torch::nn::Conv1dOptions(3, 5, 3).dilation(2), QuantDescriptor().amax(std::vector<float>{1.5f}));
    auto x = torch::randn({2, 3, 12});
    auto w = fake_quant(c->weight, channel_amax(c->weight, 0), 8, false, false, 0);
    REQUIRE(torch::equal(c(x), F::conv1d(fake_quant(x, a), w, F::Conv1dFuncOptions().bias(c->bias).dilation(2))));
  }
  {
    tqnn::QuantConv3d c(torch::nn::Conv3dOptions(2, 3, 2).bias(false), QuantDescriptor().amax(std::vector<float>{1.5f}));
    auto x = torch::randn({1, 2, 4, 5, 5});
    auto w = fake_quant(c->weight, channel_amax(c->weight, 0), 8, false, false, 0);
    REQUIRE(!c->bias.defined());
    REQUIRE(torch::equal(c(x), F::conv3d(fake_quant(x, a), w)));
  }
  {
    tqnn::QuantConv2d c(torch::nn::Conv2dOptions(2, 3, 3).padding(1).padding_mode(torch::kReflect),
                        QuantDescriptor().amax(std::vector<float>{1.5f}));
    auto x = torch::randn({1, 2, 6, 6});
    auto w = fake_quant(c->weight, channel_amax(c->weight, 0), 8, false, false, 0);
    auto padded = F::pad(fake_quant(x, a), F::PadFuncOptions({1, 1, 1, 1}).mode(torch::kReflect));
    REQUIRE(torch::equal(c(x), F::conv2d(padded, w, F::Conv2dFuncOptions().bias(c->bias))));
  }
}

TEST_CASE("QuantConvTranspose2d: per-channel weight amax on axis 1, shaped [1,Cout,1,1]", "[nn]") {
  torch::manual_seed(2);
  tqnn::QuantConvTranspose2d ct(torch::nn::ConvTranspose2dOptions(4, 6, 3).stride(2).padding(1));
  REQUIRE(ct->weight_quantizer()->desc().axis() == std::vector<int64_t>{1});
  REQUIRE(ct->weight.sizes() == at::IntArrayRef({4, 6, 3, 3}));
  const auto a_w = channel_amax(ct->weight, 1);
  REQUIRE(a_w.sizes() == at::IntArrayRef({1, 6, 1, 1}));
  ct->input_quantizer()->set_amax(torch::tensor(2.0f));
  ct->weight_quantizer()->set_amax(a_w);
  REQUIRE(ct->named_buffers()["_weight_quantizer._amax"].sizes() == at::IntArrayRef({1, 6, 1, 1}));

  auto x = torch::randn({2, 4, 5, 5});
  auto xq = fake_quant(x, torch::tensor(2.0f));
  auto wq = fake_quant(ct->weight, a_w, 8, false, false, 1);
  auto opts = F::ConvTranspose2dFuncOptions().bias(ct->bias).stride(2).padding(1);
  REQUIRE(torch::equal(ct(x), F::conv_transpose2d(xq, wq, opts)));
  // output_size selects output_padding, as torch's ConvTranspose2d does.
  auto y = ct(x, at::IntArrayRef({10, 10}));
  REQUIRE(y.sizes() == at::IntArrayRef({2, 6, 10, 10}));
  REQUIRE(torch::equal(y, F::conv_transpose2d(xq, wq, opts.output_padding(1))));
  CHECK_THROWS_WITH(ct(x, at::IntArrayRef({20, 20})), Catch::Contains("valid sizes range from"));
}

TEST_CASE("QuantConvTranspose1d / 3d equal the float ops", "[nn]") {
  torch::manual_seed(3);
  const auto a = torch::tensor(2.0f);
  {
    tqnn::QuantConvTranspose1d ct(torch::nn::ConvTranspose1dOptions(3, 4, 3).stride(2),
                                  QuantDescriptor().amax(std::vector<float>{2.0f}));
    auto x = torch::randn({2, 3, 7});
    auto wq = fake_quant(ct->weight, channel_amax(ct->weight, 1), 8, false, false, 1);
    REQUIRE(torch::equal(ct(x), F::conv_transpose1d(fake_quant(x, a), wq,
                                                    F::ConvTranspose1dFuncOptions().bias(ct->bias).stride(2))));
  }
  {
    tqnn::QuantConvTranspose3d ct(torch::nn::ConvTranspose3dOptions(2, 2, 2),
                                  QuantDescriptor().amax(std::vector<float>{2.0f}));
    auto x = torch::randn({1, 2, 3, 3, 3});
    auto wq = fake_quant(ct->weight, channel_amax(ct->weight, 1), 8, false, false, 1);
    REQUIRE(torch::equal(ct(x), F::conv_transpose3d(fake_quant(x, a), wq,
                                                    F::ConvTranspose3dFuncOptions().bias(ct->bias))));
  }
}

TEST_CASE("QuantLinear equals linear of the fake-quantized input and weight, weight amax is [out,1]", "[nn]") {
  torch::manual_seed(4);
  tqnn::QuantLinear fc(torch::nn::LinearOptions(8, 5));
  const auto a_w = channel_amax(fc->weight, 0);
  REQUIRE(a_w.sizes() == at::IntArrayRef({5, 1}));
  fc->input_quantizer()->set_amax(torch::tensor(3.0f));
  fc->weight_quantizer()->set_amax(a_w);
  auto x = torch::randn({3, 2, 8}) * 2;
  auto ref = F::linear(fake_quant(x, torch::tensor(3.0f)), fake_quant(fc->weight, a_w, 8, false, false, 0), fc->bias);
  REQUIRE(torch::equal(fc(x), ref));
}

TEST_CASE("quantized pooling is the float pooling of the fake-quantized input", "[nn]") {
  torch::manual_seed(5);
  const auto desc = QuantDescriptor().amax(std::vector<float>{1.0f});
  const auto a = torch::tensor(1.0f);
  auto x1 = torch::randn({2, 3, 8});
  auto x2 = torch::randn({2, 3, 8, 8});
  auto x3 = torch::randn({1, 2, 4, 4, 4});
  using namespace torch::nn;
  REQUIRE(torch::equal(tqnn::QuantMaxPool1d(MaxPool1dOptions(2), desc)(x1), F::max_pool1d(fake_quant(x1, a), MaxPool1dOptions(2))));
  REQUIRE(torch::equal(tqnn::QuantMaxPool2d(MaxPool2dOptions(3).stride(2).padding(1), desc)(x2),
                       F::max_pool2d(fake_quant(x2, a), MaxPool2dOptions(3).stride(2).padding(1))));
  REQUIRE(torch::equal(tqnn::QuantMaxPool3d(MaxPool3dOptions(2), desc)(x3), F::max_pool3d(fake_quant(x3, a), MaxPool3dOptions(2))));
  REQUIRE(torch::equal(tqnn::QuantAvgPool1d(AvgPool1dOptions(2), desc)(x1), F::avg_pool1d(fake_quant(x1, a), AvgPool1dOptions(2))));
  REQUIRE(torch::equal(tqnn::QuantAvgPool2d(AvgPool2dOptions(2).ceil_mode(true), desc)(x2),
                       F::avg_pool2d(fake_quant(x2, a), AvgPool2dOptions(2).ceil_mode(true))));
  REQUIRE(torch::equal(tqnn::QuantAvgPool3d(AvgPool3dOptions(2), desc)(x3), F::avg_pool3d(fake_quant(x3, a), AvgPool3dOptions(2))));
  REQUIRE(torch::equal(tqnn::QuantAdaptiveAvgPool1d(AdaptiveAvgPool1dOptions(3), desc)(x1),
                       F::adaptive_avg_pool1d(fake_quant(x1, a), AdaptiveAvgPool1dOptions(3))));
  REQUIRE(torch::equal(tqnn::QuantAdaptiveAvgPool2d(AdaptiveAvgPool2dOptions({1, 1}), desc)(x2),
                       F::adaptive_avg_pool2d(fake_quant(x2, a), AdaptiveAvgPool2dOptions({1, 1}))));
  REQUIRE(torch::equal(tqnn::QuantAdaptiveAvgPool3d(AdaptiveAvgPool3dOptions(2), desc)(x3),
                       F::adaptive_avg_pool3d(fake_quant(x3, a), AdaptiveAvgPool3dOptions(2))));
}

TEST_CASE("state keys are torch's plus pytorch-quantization's _amax keys", "[nn]") {
  tqnn::QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3));
  torch::nn::Conv2d float_conv(torch::nn::Conv2dOptions(3, 4, 3));
  REQUIRE(keys(conv->named_parameters()) == keys(float_conv->named_parameters()));
  REQUIRE(conv->named_buffers().is_empty());  // dynamic until calibrated or set
  conv->input_quantizer()->set_amax(torch::tensor(1.0f));
  conv->weight_quantizer()->set_amax(torch::ones({4, 1, 1, 1}));
  REQUIRE(keys(conv->named_buffers()) == std::vector<std::string>{"_input_quantizer._amax", "_weight_quantizer._amax"});
  REQUIRE(conv->named_buffers()["_input_quantizer._amax"].dim() == 0);

  tqnn::QuantMaxPool2d pool(torch::nn::MaxPool2dOptions(2), QuantDescriptor().amax(std::vector<float>{1.0f}));
  REQUIRE(keys(pool->named_buffers()) == std::vector<std::string>{"_input_quantizer._amax"});
  REQUIRE(pool->named_parameters().is_empty());
}

TEST_CASE("torch::save / torch::load round trip of weights and amax", "[nn]") {
  torch::manual_seed(6);
  tqnn::QuantConv2d a(torch::nn::Conv2dOptions(3, 4, 3));
  a->input_quantizer()->set_amax(torch::tensor(1.25f));
  a->weight_quantizer()->set_amax(channel_amax(a->weight, 0));
  std::stringstream buf;
  torch::save(a, buf);

  // LibTorch loads into the tensors a module has, so the target's quantizers carry an amax of
  // the right shape (as after calibration) before loading.
  tqnn::QuantConv2d b(torch::nn::Conv2dOptions(3, 4, 3));
  b->input_quantizer()->set_amax(torch::tensor(0.0f));
  b->weight_quantizer()->set_amax(torch::zeros({4, 1, 1, 1}));
  torch::load(b, buf);
  REQUIRE(torch::equal(b->weight, a->weight));
  REQUIRE(torch::equal(b->bias, a->bias));
  REQUIRE(torch::equal(b->input_quantizer()->amax(), a->input_quantizer()->amax()));
  REQUIRE(torch::equal(b->weight_quantizer()->amax(), a->weight_quantizer()->amax()));
  auto x = torch::randn({1, 3, 6, 6});
  REQUIRE(torch::equal(a(x), b(x)));
}

TEST_CASE("construction from a float layer copies options and weights", "[nn]") {
  torch::manual_seed(7);
  torch::nn::Conv2d f(torch::nn::Conv2dOptions(3, 8, 3).stride(2).padding(1).bias(false));
  tqnn::QuantConv2d q(f);
  REQUIRE(*q->options.stride() == *f->options.stride());
  REQUIRE(q->options.padding().index() == f->options.padding().index());
  REQUIRE(!q->bias.defined());
  REQUIRE(torch::equal(q->weight, f->weight));
  REQUIRE(q->weight.data_ptr() != f->weight.data_ptr());  // a copy: training one leaves the other
  REQUIRE(q->weight.requires_grad());
  // With quantization off it is the float layer.
  auto x = torch::randn({1, 3, 8, 8});
  q->input_quantizer()->disable();
  q->weight_quantizer()->disable();
  REQUIRE(torch::equal(q(x), f(x)));

  torch::nn::Linear fl(6, 4);
  tqnn::QuantLinear ql(fl, QuantDescriptor().num_bits(6));
  REQUIRE(torch::equal(ql->weight, fl->weight));
  REQUIRE(torch::equal(ql->bias, fl->bias));
  REQUIRE(ql->input_quantizer()->num_bits() == 6);

  torch::nn::ConvTranspose2d ft(torch::nn::ConvTranspose2dOptions(4, 2, 2).stride(2).output_padding(1));
  tqnn::QuantConvTranspose2d qt(ft);
  REQUIRE(qt->options.transposed());
  REQUIRE(*qt->options.output_padding() == *ft->options.output_padding());
  REQUIRE(torch::equal(qt->weight, ft->weight));

  torch::nn::AvgPool2d fp(torch::nn::AvgPool2dOptions(3).stride(1).count_include_pad(false));
  tqnn::QuantAvgPool2d qp(fp);
  REQUIRE(qp->options.count_include_pad() == false);
  REQUIRE(*qp->options.stride() == *fp->options.stride());

  CHECK_THROWS_WITH(tqnn::QuantConv2d(torch::nn::Conv2d(nullptr)), Catch::Contains("QuantConv2d: float_module is an empty"));
}

TEST_CASE("a descriptor axis invalid for the layer is an error naming the axis and the layer", "[nn][errors]") {
  const auto axis4 = QuantDescriptor().axis(std::vector<int64_t>{4});
  CHECK_THROWS_WITH(tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3), std::nullopt, axis4),
                    Catch::Contains("QuantConv2d: quant_desc_weight axis 4 is out of range for a weight with 4 dimensions"));
  CHECK_THROWS_WITH(tqnn::QuantLinear(torch::nn::LinearOptions(3, 4), std::nullopt, QuantDescriptor().axis(std::vector<int64_t>{2})),
                    Catch::Contains("QuantLinear: quant_desc_weight axis 2"));
  CHECK_THROWS_WITH(tqnn::QuantConv1d(torch::nn::Conv1dOptions(3, 4, 3), QuantDescriptor().axis(std::vector<int64_t>{-4})),
                    Catch::Contains("QuantConv1d: quant_desc_input axis -4 is out of range for an input with 3 dimensions"));
  CHECK_THROWS_WITH(tqnn::QuantMaxPool2d(torch::nn::MaxPool2dOptions(2), axis4), Catch::Contains("QuantMaxPool2d"));
  // Negative axes count from the end: -1 on a conv2d weight is the last kernel dim, valid.
  CHECK_NOTHROW(tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3), std::nullopt, QuantDescriptor().axis(std::vector<int64_t>{-1})));
  CHECK_THROWS_WITH(tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3), QuantDescriptor().fake_quant(false)),
                    Catch::Contains("QuantConv2d: quant_desc_input has fake_quant=false"));
  CHECK_THROWS_WITH(tqnn::QuantConvTranspose2d(torch::nn::ConvTranspose2dOptions(3, 4, 3).padding_mode(torch::kReflect)),
                    Catch::Contains("QuantConvTranspose2d: only padding_mode kZeros is supported, got kReflect"));
  CHECK_THROWS_WITH(tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3), QuantDescriptor().num_bits(1)),
                    Catch::Contains("num_bits"));
}

TEST_CASE("class-level default descriptors apply to later constructions of that class only", "[nn]") {
  const auto saved = tqnn::QuantConv2dImpl::default_quant_desc_weight();
  REQUIRE(saved.axis() == std::vector<int64_t>{0});
  REQUIRE(tqnn::QuantConvTranspose2dImpl::default_quant_desc_weight().axis() == std::vector<int64_t>{1});
  REQUIRE(!tqnn::QuantConv2dImpl::default_quant_desc_input().axis());

  tqnn::QuantConv2dImpl::set_default_quant_desc_weight(QuantDescriptor().num_bits(4).axis(std::vector<int64_t>{0}));
  tqnn::QuantConv2d c(torch::nn::Conv2dOptions(2, 2, 1));
  tqnn::QuantConv1d c1(torch::nn::Conv1dOptions(2, 2, 1));
  tqnn::QuantConv2dImpl::set_default_quant_desc_weight(saved);
  REQUIRE(c->weight_quantizer()->num_bits() == 4);
  REQUIRE(c1->weight_quantizer()->num_bits() == 8);
  REQUIRE(tqnn::QuantConv2d(torch::nn::Conv2dOptions(2, 2, 1))->weight_quantizer()->num_bits() == 8);
  CHECK_THROWS_WITH(tqnn::QuantLinearImpl::set_default_quant_desc_input(QuantDescriptor().num_bits(0)),
                    Catch::Contains("num_bits"));
}

TEST_CASE("QuantAdd shares one quantizer by default, QuantConcat quantizes every input with one", "[nn]") {
  torch::manual_seed(8);
  auto x = torch::randn({2, 3, 4}) * 2;
  auto y = torch::randn({2, 3, 4});
  tqnn::QuantAdd add;
  REQUIRE(add->input0_quantizer().get() == add->input1_quantizer().get());
  add->input_quantizer()->set_amax(torch::tensor(1.5f));
  // One registration, so a learned amax is not handed to an optimizer twice.
  REQUIRE(keys(add->named_buffers()) == std::vector<std::string>{"_input0_quantizer._amax"});
  const auto a = torch::tensor(1.5f);
  REQUIRE(torch::equal(add(x, y), fake_quant(x, a) + fake_quant(y, a)));

  tqnn::QuantAdd add2(tqnn::QuantAddOptions().share_quantizer(false));
  add2->input0_quantizer()->set_amax(torch::tensor(1.5f));
  add2->input1_quantizer()->set_amax(torch::tensor(0.5f));
  REQUIRE(keys(add2->named_buffers()) ==
          std::vector<std::string>{"_input0_quantizer._amax", "_input1_quantizer._amax"});
  REQUIRE(torch::equal(add2(x, y), fake_quant(x, a) + fake_quant(y, torch::tensor(0.5f))));

  tqnn::QuantConcat cat(tqnn::QuantConcatOptions().dim(2), QuantDescriptor().amax(std::vector<float>{1.5f}));
  REQUIRE(torch::equal(cat(std::vector<at::Tensor>{x, y}), torch::cat({fake_quant(x, a), fake_quant(y, a)}, 2)));
  REQUIRE(keys(cat->named_buffers()) == std::vector<std::string>{"_input_quantizer._amax"});
  CHECK_THROWS_WITH(cat(std::vector<at::Tensor>{}), Catch::Contains("QuantConcat: inputs is an empty list"));
}

TEST_CASE("clone() gives an independent copy with the same weights and quantizers", "[nn]") {
  tqnn::QuantConv2d a(torch::nn::Conv2dOptions(2, 3, 3), QuantDescriptor().amax(std::vector<float>{2.0f}));
  auto b = std::dynamic_pointer_cast<tqnn::QuantConv2dImpl>(a->clone());
  REQUIRE(b);
  REQUIRE(torch::equal(b->weight, a->weight));
  REQUIRE(b->weight.data_ptr() != a->weight.data_ptr());
  REQUIRE(b->input_quantizer().get() != a->input_quantizer().get());
  REQUIRE(b->input_quantizer()->amax().item<float>() == 2.0f);
  auto x = torch::randn({1, 2, 5, 5});
  REQUIRE(torch::equal(b->forward(x), a(x)));
}

TEST_CASE("tools find the quantizers of any quantized module through QuantInputMixin / QuantMixin", "[nn]") {
  torch::nn::Sequential seq(tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3)), torch::nn::ReLU(),
                            tqnn::QuantAdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)), torch::nn::Flatten(),
                            tqnn::QuantLinear(4, 2));
  int inputs = 0, weights = 0;
  for (const auto& m : seq->modules(/*include_self=*/false)) {
    if (auto* q = dynamic_cast<const tqnn::QuantInputMixin*>(m.get())) {
      REQUIRE(!q->input_quantizer().is_empty());
      ++inputs;
    }
    if (auto* q = dynamic_cast<const tqnn::QuantMixin*>(m.get())) {
      REQUIRE(q->weight_quantizer()->desc().axis() == std::vector<int64_t>{0});
      ++weights;
    }
  }
  REQUIRE(inputs == 3);
  REQUIRE(weights == 2);
  REQUIRE(seq->forward(torch::randn({2, 3, 5, 5})).sizes() == at::IntArrayRef({2, 2}));

  std::ostringstream s;
  s << *seq;
  REQUIRE_THAT(s.str(), Catch::Contains("torchqat::nn::QuantConv2d(3, 4, kernel_size=[3, 3], stride=[1, 1])"));
  REQUIRE_THAT(s.str(), Catch::Contains("(_input_quantizer): torchqat::TensorQuantizer("));
  REQUIRE_THAT(s.str(), Catch::Contains("torchqat::nn::QuantAdaptiveAvgPool2d(output_size=[1, 1])"));
  REQUIRE_THAT(s.str(), Catch::Contains("torchqat::nn::QuantLinear(in_features=4, out_features=2, bias=true)"));
}
