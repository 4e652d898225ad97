// torchqat::fold_bn: folded weights and bias against a float64 reference of the formula, the
// model's output kept, BN replaced by Identity, per-channel weight amax rescaled, ConvTranspose
// groups, Linear + BatchNorm1d, and pairs left alone with a warning.
#include "catch_torch.h"

#include "torchqat/fold_bn.h"
#include "torchqat/nn/quant_conv.h"
#include "torchqat/ops.h"

namespace {

struct WarningCollector : c10::WarningHandler {
  std::vector<std::string> messages;
  void process(const c10::Warning& w) override { messages.push_back(w.msg()); }
};

template <typename BN>
void randomize(BN& bn) {
  torch::NoGradGuard no_grad;
  bn->weight.normal_();
  bn->bias.normal_();
  bn->running_mean.normal_();
  bn->running_var.uniform_(0.1, 1.1);
}

// w * s and (b - mean) * s + beta in float64, s along `axis` of the weight.
std::pair<at::Tensor, at::Tensor> reference(const at::Tensor& w, const at::Tensor& b, const torch::nn::BatchNorm2d& bn,
                                            int64_t axis = 0) {
  const auto s = bn->weight.to(at::kDouble) / torch::sqrt(bn->running_var.to(at::kDouble) + bn->options.eps());
  std::vector<int64_t> shape(w.dim(), 1);
  shape[axis] = -1;
  const auto b0 = b.defined() ? b.to(at::kDouble) : torch::zeros_like(s);
  return {(w.to(at::kDouble) * s.reshape(shape)).to(at::kFloat),
          ((b0 - bn->running_mean.to(at::kDouble)) * s + bn->bias.to(at::kDouble)).to(at::kFloat)};
}

// A custom module whose forward runs a nested Sequential: fold_bn finds pairs anywhere in the tree.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(torch::nn::Sequential b) : block(register_module("block", b)) {}
  at::Tensor forward(const at::Tensor& x) { return block->forward(x); }
  torch::nn::Sequential block;
};
TORCH_MODULE(Net);

}  // namespace

TEST_CASE("fold_bn folds Sequential conv and BN pairs exactly and keeps the output", "[flow][fold_bn]") {
  torch::manual_seed(0);
  for (bool bias : {false, true}) {
    INFO("bias " << bias);
    using namespace torch::nn;
    Conv2d conv(Conv2dOptions(3, 6, 3).padding(1).bias(bias));
    BatchNorm2d bn(6);
    randomize(bn);
    Sequential inner(conv, bn, ReLU());
    Net model(inner);
    model->eval();
    const auto x = torch::randn({2, 3, 8, 8});
    torch::NoGradGuard no_grad;
    const auto y = model->forward(x);
    const auto [w_ref, b_ref] = reference(conv->weight, conv->bias, bn);
    const auto weight_impl = conv->weight.unsafeGetTensorImpl();
    const auto folded = torchqat::fold_bn(*model);
    REQUIRE(folded == std::vector<std::pair<std::string, std::string>>{{"block.0", "block.1"}});
    REQUIRE(inner->ptr(1)->as<IdentityImpl>() != nullptr);
    REQUIRE(inner->named_children()[1].value()->as<IdentityImpl>() != nullptr);
    REQUIRE(conv->weight.unsafeGetTensorImpl() == weight_impl);  // the same parameter, changed in place
    REQUIRE(torch::equal(conv->weight, w_ref));
    REQUIRE(torch::equal(conv->bias, b_ref));
    REQUIRE(conv->named_parameters(false).contains("bias"));
    REQUIRE(conv->named_parameters(false)["bias"].defined());
    REQUIRE(conv->options.bias());
    REQUIRE(torch::allclose(model->forward(x), y, 1e-5, 1e-5));
  }
}

TEST_CASE("fold_bn into a QuantConv2d rescales the per-channel weight amax", "[flow][fold_bn]") {
  torch::manual_seed(1);
  torchqat::nn::QuantConv2d conv(torch::nn::Conv2dOptions(3, 4, 3));
  torch::nn::BatchNorm2d bn(4);
  randomize(bn);
  const auto w = conv->weight.detach().clone();
  conv->weight_quantizer()->set_amax(w.abs().amax({1, 2, 3}, true));
  conv->input_quantizer()->set_amax(torch::tensor(3.0f));
  torch::nn::Sequential model(conv, bn);
  model->eval();
  const auto [w_ref, b_ref] = reference(conv->weight, conv->bias, bn);
  const auto s = (bn->weight.to(at::kDouble) / torch::sqrt(bn->running_var.to(at::kDouble) + 1e-5)).abs();
  torchqat::fold_bn(*model);
  REQUIRE(torch::equal(conv->weight, w_ref));
  REQUIRE(torch::equal(conv->bias, b_ref));
  const auto amax = conv->weight_quantizer()->amax();
  REQUIRE(torch::equal(amax, (w.abs().amax({1, 2, 3}, true).to(at::kDouble) * s.reshape({4, 1, 1, 1})).to(at::kFloat)));
  const auto x = torch::randn({1, 3, 6, 6});
  torch::NoGradGuard no_grad;
  const auto expected = torch::conv2d(torchqat::fake_quant(x, torch::tensor(3.0f)),
                                      torchqat::fake_quant(conv->weight, amax, 8, false, false, 0), conv->bias);
  REQUIRE(torch::equal(model->forward(x), expected));
}

TEST_CASE("fold_bn folds grouped ConvTranspose and Linear with BatchNorm1d", "[flow][fold_bn]") {
  torch::manual_seed(2);
  using namespace torch::nn;
  ConvTranspose2d ct(ConvTranspose2dOptions(4, 6, 3).stride(2).groups(2));
  BatchNorm2d bn(6);
  randomize(bn);
  BatchNorm1d bn1(5);
  randomize(bn1);
  Sequential model(ct, bn, Flatten(), Linear(6 * 9 * 9, 5), bn1);
  model->eval();
  const auto x = torch::randn({2, 4, 4, 4});
  torch::NoGradGuard no_grad;
  const auto y = model->forward(x);
  // groups: the weight is [in, out / groups, kh, kw]; channel o of group g is s[g * 3 + o].
  const auto s = bn->weight.to(at::kDouble) / torch::sqrt(bn->running_var.to(at::kDouble) + 1e-5);
  const auto w_ref = (ct->weight.to(at::kDouble).reshape({2, 2, 3, 3, 3}) * s.reshape({2, 1, 3, 1, 1}))
                         .reshape({4, 3, 3, 3})
                         .to(at::kFloat);
  REQUIRE(torchqat::fold_bn(*model).size() == 2);
  REQUIRE(torch::equal(ct->weight, w_ref));
  REQUIRE(model->ptr(1)->as<IdentityImpl>() != nullptr);
  REQUIRE(model->ptr(4)->as<IdentityImpl>() != nullptr);
  REQUIRE(torch::allclose(model->forward(x), y, 1e-4, 1e-4));
}

TEST_CASE("fold_bn leaves a BN without running statistics and warns", "[flow][fold_bn]") {
  using namespace torch::nn;
  Sequential model(Conv2d(1, 2, 1), BatchNorm2d(BatchNormOptions(2).track_running_stats(false)));
  WarningCollector w;
  c10::WarningUtils::WarningHandlerGuard guard(&w);
  REQUIRE(torchqat::fold_bn(*model).empty());
  REQUIRE(model->ptr(1)->as<BatchNorm2dImpl>() != nullptr);
  REQUIRE(w.messages.size() == 1);
  REQUIRE_THAT(w.messages[0], Catch::Contains("'0' + '1' left as they are") && Catch::Contains("no running statistics"));
}
