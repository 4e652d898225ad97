// torchqat::load_checkpoint: loads what torch::save and pickled dicts hold, registers the amax of
// quantizers that have none, and on any error leaves the module exactly as it was. (The error
// messages themselves are rows of docs/errors.md, tested in test_error_table.cpp.)
#include "catch_torch.h"
#include <torch/torch.h>

#include <cstdio>
#include <random>
#include <sstream>

#include "torchqat/checkpoint.h"
#include "torchqat/nn/quant_conv.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/tensor_quantizer.h"

namespace {

namespace tqnn = torchqat::nn;
using torchqat::QuantDescriptor;

// conv -> relu -> flatten -> linear, quant layers with default descriptors (weights per channel).
struct NetImpl : torch::nn::Module {
  NetImpl()
      : conv(register_module("conv", tqnn::QuantConv2d(torch::nn::Conv2dOptions(3, 4, 3)))),
        bn(register_module("bn", torch::nn::BatchNorm2d(4))),
        fc(register_module("fc", tqnn::QuantLinear(torch::nn::LinearOptions(4 * 4 * 4, 5)))) {}
  at::Tensor forward(const at::Tensor& x) { return fc(torch::relu(bn(conv(x))).flatten(1)); }
  tqnn::QuantConv2d conv;
  torch::nn::BatchNorm2d bn;
  tqnn::QuantLinear fc;
};
TORCH_MODULE(Net);

// A net as after calibration and some training: amax everywhere, BN statistics moved.
Net calibrated_net() {
  torch::manual_seed(11);
  Net n;
  n->train();
  n->conv->input_quantizer()->set_amax(torch::tensor(2.5f));
  n->conv->weight_quantizer()->set_amax(n->conv->weight.detach().abs().amax({1, 2, 3}, true));
  n->fc->input_quantizer()->set_amax(torch::tensor(3.0f));
  n->fc->weight_quantizer()->set_amax(n->fc->weight.detach().abs().amax({1}, true));
  n->forward(torch::randn({8, 3, 6, 6}));  // BN running stats
  n->eval();
  return n;
}

std::vector<std::pair<std::string, at::Tensor>> state(torch::nn::Module& m) {
  std::vector<std::pair<std::string, at::Tensor>> s;
  for (const auto& p : m.named_parameters()) s.emplace_back(p.key(), p.value().detach().clone());
  for (const auto& b : m.named_buffers()) s.emplace_back(b.key(), b.value().detach().clone());
  return s;
}

bool same_state(torch::nn::Module& m, const std::vector<std::pair<std::string, at::Tensor>>& s) {
  const auto now = state(m);
  if (now.size() != s.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (now[i].first != s[i].first || !torch::equal(now[i].second, s[i].second)) return false;
  }
  return true;
}

using TensorDict = c10::Dict<std::string, at::Tensor>;

TensorDict dict_of(torch::nn::Module& m) {
  TensorDict d;
  for (const auto& [k, v] : state(m)) d.insert(k, v);
  return d;
}

// What torch::pickle_save writes for d, as a readable stream.
std::istringstream pickled(const TensorDict& d) {
  const auto bytes = torch::pickle_save(d);
  return std::istringstream(std::string(bytes.begin(), bytes.end()));
}

bool has_amax(const Net& n) {
  return n->conv->input_quantizer()->has_amax() || n->conv->weight_quantizer()->has_amax() ||
         n->fc->input_quantizer()->has_amax() || n->fc->weight_quantizer()->has_amax();
}

}  // namespace

TEST_CASE("load_checkpoint fills a fresh model from torch::save, amax included", "[checkpoint]") {
  Net a = calibrated_net();
  const std::string path = "torchqat_test_checkpoint.pt";
  torch::save(a, path);

  Net b;  // no quantizer has an amax yet: torch::load could not take them
  REQUIRE_FALSE(has_amax(b));
  torchqat::load_checkpoint(*b, path);
  std::remove(path.c_str());
  b->eval();
  REQUIRE(same_state(*b, state(*a)));
  REQUIRE(b->conv->weight_quantizer()->amax().sizes() == at::IntArrayRef({4, 1, 1, 1}));
  const auto x = torch::randn({2, 3, 6, 6});
  REQUIRE(torch::equal(b(x), a(x)));
}

TEST_CASE("load_checkpoint reads a pickled dict, per-channel amax may be [K] or broadcast-shaped", "[checkpoint]") {
  Net a = calibrated_net();
  TensorDict d = dict_of(*a);
  d.insert_or_assign("conv._weight_quantizer._amax", a->conv->weight_quantizer()->amax().reshape({4}));
  std::istringstream in = pickled(d);

  Net b;
  torchqat::load_checkpoint(*b, in);
  b->eval();
  REQUIRE(b->conv->weight_quantizer()->amax().sizes() == at::IntArrayRef({4}));
  const auto x = torch::randn({2, 3, 6, 6});
  REQUIRE(torch::equal(b(x), a(x)));
}

TEST_CASE("load_checkpoint copies into a model that has amax, and into a learned amax", "[checkpoint]") {
  Net a = calibrated_net();
  std::stringstream buf;
  torch::save(a, buf);
  Net b = calibrated_net();
  b->conv->input_quantizer()->set_amax(torch::tensor(0.5f));
  torchqat::load_checkpoint(*b, buf);
  REQUIRE(b->conv->input_quantizer()->amax().item<float>() == 2.5f);

  torchqat::TensorQuantizer src(QuantDescriptor().amax(std::vector<float>{1.75f}));
  torchqat::TensorQuantizer learned(QuantDescriptor().learn_amax(true));
  std::stringstream one;
  torch::save(src, one);
  torchqat::load_checkpoint(*learned, one);
  REQUIRE(learned->amax().item<float>() == 1.75f);
  REQUIRE(learned->amax().requires_grad());  // still the learned parameter
}

TEST_CASE("a bad checkpoint lists every problem and leaves the model unchanged", "[checkpoint][errors]") {
  Net a = calibrated_net();
  TensorDict d = dict_of(*a);
  d.insert_or_assign("conv._input_quantizer._amax", torch::tensor(-1.0f));                // bad value
  d.insert_or_assign("fc._weight_quantizer._amax", torch::ones({3, 1}));                  // 3 for 5 channels
  d.insert_or_assign("bn.running_var", torch::ones({5}));                                  // wrong shape

  for (Net b : {Net(), calibrated_net()}) {  // without and with amax
    b->conv->input_quantizer()->set_amax(torch::tensor(0.75f));
    const auto before = state(*b);
    const bool had_fc_amax = b->fc->weight_quantizer()->has_amax();
    std::istringstream in = pickled(d);
    try {
      torchqat::load_checkpoint(*b, in);
      FAIL("load_checkpoint accepted a bad checkpoint");
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      CHECK_THAT(msg, Catch::Contains("the module is unchanged"));
      CHECK_THAT(msg, Catch::Contains("conv._input_quantizer._amax: amax must be finite and >= 0, got [-1]"));
      CHECK_THAT(msg, Catch::Contains("fc._weight_quantizer._amax"));
      CHECK_THAT(msg, Catch::Contains("bn.running_var: shape [5] does not match the model's [4]"));
    }
    REQUIRE(same_state(*b, before));
    REQUIRE(b->fc->weight_quantizer()->has_amax() == had_fc_amax);
  }
}

TEST_CASE("strict=false loads what matches and skips missing and unknown keys", "[checkpoint]") {
  TensorDict d;
  d.insert("conv._input_quantizer._amax", torch::tensor(4.0f));
  d.insert("head.weight", torch::ones({2}));  // a layer this model does not have
  Net b;
  const auto weight = b->conv->weight.detach().clone();
  std::istringstream in = pickled(d);
  torchqat::load_checkpoint(*b, in, /*strict=*/false);
  REQUIRE(b->conv->input_quantizer()->amax().item<float>() == 4.0f);
  REQUIRE_FALSE(b->fc->input_quantizer()->has_amax());
  REQUIRE(torch::equal(b->conv->weight, weight));
}

TEST_CASE("corrupted checkpoints: an error or a valid model, never a crash or a half-loaded one", "[checkpoint][errors]") {
  Net a = calibrated_net();
  std::stringstream buf;
  torch::save(a, buf);
  const std::string good = buf.str();
  std::mt19937 rng(5);
  int refused = 0;
  for (int trial = 0; trial < 600; ++trial) {
    std::string bad = good;
    if (trial % 3 == 0) {
      bad.resize(std::uniform_int_distribution<size_t>(0, good.size() - 1)(rng));  // truncated
    } else {
      for (int k = 0; k < 1 + trial % 4; ++k) {  // a few bytes overwritten
        bad[std::uniform_int_distribution<size_t>(0, good.size() - 1)(rng)] = static_cast<char>(rng());
      }
    }
    Net b;
    const auto before = state(*b);
    std::istringstream in(bad);
    try {
      torchqat::load_checkpoint(*b, in);
    } catch (const c10::Error& e) {
      ++refused;
      INFO("trial " << trial << ": " << e.what_without_backtrace());
      REQUIRE(same_state(*b, before));
      REQUIRE_FALSE(has_amax(b));
      continue;
    }
    // Accepted: the corruption hit tensor data only; every amax is still valid.
    for (const auto& [k, v] : state(*b)) {
      if (k.size() >= 5 && k.compare(k.size() - 5, 5, "_amax") == 0) {
        REQUIRE(torch::isfinite(v).all().item<bool>());
        REQUIRE(v.min().item<float>() >= 0.0f);
      }
    }
  }
  REQUIRE(refused >= 200);  // every truncation at least
}
