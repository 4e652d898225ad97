// Model-level quantizer state: quantizers() with roles from the owning module, set_mode and the
// RAII guards, checked on the quantizers' own switches and on forward results against plain torch.
#include "catch_torch.h"

#include <map>
#include <stdexcept>

#include "onnx_test_model.h"
#include "torchqat/nn/quant_lstm.h"
#include "torchqat/quantizers.h"

using torchqat::Mode;
using torchqat::Role;

namespace {

// A custom module holding a TensorQuantizer named like a weight quantizer that quantizes its
// input: the role must come from the owner (no quantized layer claims it), not from the name.
struct MisnamedImpl : torch::nn::Module {
  MisnamedImpl() { q = register_module("_weight_quantizer", torchqat::TensorQuantizer()); }
  at::Tensor forward(const at::Tensor& x) { return q(x); }
  torchqat::TensorQuantizer q{nullptr};
};
TORCH_MODULE(Misnamed);

// name -> "input" / "weight" (strings, so that Catch can print a mismatch).
std::map<std::string, std::string> roles(torch::nn::Module& m) {
  std::map<std::string, std::string> out;
  for (const auto& e : torchqat::quantizers(m)) out[e.name] = torchqat::to_string(e.role);
  return out;
}

void calibrate_max(torchqat_test::TinyResNet& model) {
  torchqat_test::calibrate(model, {torch::randn({4, 3, 8, 8}), torch::randn({4, 3, 8, 8})});
}

}  // namespace

TEST_CASE("quantizers lists each quantizer once with the role of its owning module", "[flow][quantizers]") {
  torchqat_test::TinyResNet model;
  const auto r = roles(*model);
  const std::map<std::string, std::string> expected = {
      {"stem.0._input_quantizer", "input"},   {"stem.0._weight_quantizer", "weight"},
      {"branch.0._input_quantizer", "input"}, {"branch.0._weight_quantizer", "weight"},
      {"add._input0_quantizer", "input"},     {"pool._input_quantizer", "input"},
      {"cat._input_quantizer", "input"},      {"gap._input_quantizer", "input"},
      {"fc._input_quantizer", "input"},       {"fc._weight_quantizer", "weight"}};
  REQUIRE(r == expected);
  // Tree order, and the entries are the modules' own quantizers.
  const auto qs = torchqat::quantizers(*model);
  REQUIRE(qs.front().name == "stem.0._input_quantizer");
  REQUIRE(qs.back().quantizer.get() == model->fc->weight_quantizer().get());

  Misnamed misnamed;
  REQUIRE(roles(*misnamed) == std::map<std::string, std::string>{{"_weight_quantizer", "input"}});

  torchqat::nn::QuantLSTM lstm(torch::nn::LSTMOptions(4, 3).num_layers(2));
  REQUIRE(roles(*lstm) == std::map<std::string, std::string>{{"_input_quantizers.0", "input"},
                                                             {"_input_quantizers.1", "input"},
                                                             {"_weight_quantizers.0", "weight"},
                                                             {"_weight_quantizers.1", "weight"}});
  // A bare quantizer is its own tree.
  torchqat::TensorQuantizer q;
  REQUIRE(torchqat::quantizers(*q).size() == 1);
  REQUIRE(torchqat::quantizers(*q)[0].name.empty());
}

TEST_CASE("set_mode switches every quantizer or those of one role", "[flow][quantizers]") {
  torchqat_test::TinyResNet model;
  torchqat::set_mode(*model, Mode::kCalib);
  for (const auto& e : torchqat::quantizers(*model)) {
    INFO(e.name);
    REQUIRE((!e.quantizer->disabled() && e.quantizer->calib_enabled() && !e.quantizer->quant_enabled()));
    REQUIRE(e.quantizer->calibrator() != nullptr);
  }
  torchqat::set_mode(*model, Mode::kDisabled, Role::kWeight);
  for (const auto& e : torchqat::quantizers(*model)) {
    INFO(e.name);
    REQUIRE(e.quantizer->disabled() == (e.role == Role::kWeight));
  }
  torchqat::set_mode(*model, Mode::kQuant);
  for (const auto& e : torchqat::quantizers(*model)) {
    INFO(e.name);
    REQUIRE((!e.quantizer->disabled() && !e.quantizer->calib_enabled() && e.quantizer->quant_enabled()));
  }
  REQUIRE(std::string(torchqat::to_string(Mode::kCalib)) == "calib");
  REQUIRE(std::string(torchqat::to_string(Role::kWeight)) == "weight");
}

TEST_CASE("disable_quantization gives the float model inside its scope and restores every switch", "[flow][guard]") {
  torch::manual_seed(0);
  torchqat_test::TinyResNet model;
  torchqat_test::randomize_batch_norms(*model);
  model->eval();
  calibrate_max(model);
  // Mixed states, which the guard must restore exactly.
  model->fc->weight_quantizer()->disable();
  model->pool->input_quantizer()->disable_quant();

  const auto x = torch::randn({2, 3, 8, 8});
  torch::NoGradGuard no_grad;
  const auto quantized = model->forward(x);
  // Reference: the same weights through plain torch layers (stem and branch convs, no fake quant).
  auto s0 = model->stem[0]->as<torchqat::nn::QuantConv2dImpl>();
  auto b0 = model->branch[0]->as<torchqat::nn::QuantConv2dImpl>();
  auto stem = torch::relu(model->stem[1]->as<torch::nn::BatchNorm2dImpl>()->forward(
      torch::conv2d(x, s0->weight, {}, 1, 1)));
  auto branch = torch::silu(model->branch[1]->as<torch::nn::BatchNorm2dImpl>()->forward(
      torch::conv2d(stem, b0->weight, b0->bias, 1, 1)));
  auto y = stem + branch;
  auto u = torch::upsample_nearest2d(torch::max_pool2d(y, 2), {8, 8});
  auto feat = torch::adaptive_avg_pool2d(torch::cat({y, u}, 1), {1, 1}).flatten(1);
  const auto reference = torch::linear(feat, model->fc->weight, model->fc->bias);
  {
    auto off = torchqat::disable_quantization(*model);
    const auto fp = model->forward(x);
    REQUIRE(torch::allclose(fp, reference, 1e-5, 1e-6));
    REQUIRE_FALSE(torch::allclose(fp, quantized, 1e-5, 1e-6));
  }
  REQUIRE(model->fc->weight_quantizer()->disabled());
  REQUIRE_FALSE(model->pool->input_quantizer()->quant_enabled());
  REQUIRE_FALSE(model->stem[0]->as<torchqat::nn::QuantConv2dImpl>()->input_quantizer()->disabled());
  REQUIRE(torch::equal(model->forward(x), quantized));

  // enable_quantization turns the disabled one on for its scope only, also when unwinding.
  try {
    auto on = torchqat::enable_quantization(*model);
    REQUIRE_FALSE(model->fc->weight_quantizer()->disabled());
    throw std::runtime_error("unwind");
  } catch (const std::runtime_error&) {
  }
  REQUIRE(model->fc->weight_quantizer()->disabled());
  // restore() early, then the destructor does nothing more.
  auto off = torchqat::disable_quantization(*model);
  off.restore();
  model->fc->weight_quantizer()->enable();
  REQUIRE_FALSE(model->fc->weight_quantizer()->disabled());
}
