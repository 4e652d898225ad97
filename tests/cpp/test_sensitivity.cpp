// tools::sensitivity / partial_quantize: each row's score equals the model evaluated with exactly
// that layer (or all but it) quantized, set up by hand; ranking, restoration, and errors.
#include "catch_torch.h"

#include <cmath>

#include "torchqat/nn/quant_linear.h"
#include "torchqat/nn/quant_lstm.h"
#include "torchqat/quantizers.h"
#include "torchqat/tools/sensitivity.h"

namespace tqnn = torchqat::nn;
using torchqat::tools::SensitivityMode;
using torchqat::tools::SensitivityOptions;

namespace {

// Three QuantLinear layers; the middle one quantizes its weight with 3 bits, so it costs most.
torch::nn::Sequential make_model() {
  torch::manual_seed(0);
  auto coarse = torchqat::QuantDescriptor().num_bits(3).axis(std::vector<int64_t>{0});
  torch::nn::Sequential m(tqnn::QuantLinear(torch::nn::LinearOptions(8, 16)), torch::nn::ReLU(),
                          tqnn::QuantLinear(torch::nn::LinearOptions(16, 16), std::nullopt, coarse),
                          torch::nn::ReLU(), tqnn::QuantLinear(torch::nn::LinearOptions(16, 4)));
  for (size_t i : {0, 2, 4}) {
    auto l = m[i]->as<tqnn::QuantLinearImpl>();
    l->weight_quantizer()->set_amax(l->weight.detach().abs().amax({1}, true));
    l->input_quantizer()->set_amax(torch::tensor(3.0f));
  }
  return m;
}

}  // namespace

TEST_CASE("sensitivity scores each layer as set up by hand and ranks them", "[tools][sensitivity]") {
  auto model = make_model();
  const auto x = torch::randn({32, 8});
  at::Tensor ref;
  {
    auto off = torchqat::disable_quantization(*model);
    ref = model->forward(x).detach();
  }
  auto eval_fn = [&] {
    torch::NoGradGuard ng;
    return -(model->forward(x) - ref).pow(2).mean().item<double>();
  };
  const auto layers = torchqat::tools::quantized_layers(*model);
  REQUIRE(layers.size() == 3);
  REQUIRE(layers[1].first == "2");
  // By hand: only layer i quantized.
  auto only = [&](size_t i, bool all_but) {
    auto guard = torchqat::enable_quantization(*model);
    for (size_t j = 0; j < layers.size(); ++j) {
      if ((j == i) == all_but) {
        for (auto& q : layers[j].second) q.ptr()->disable();
      }
    }
    return eval_fn();
  };
  const double quant = eval_fn();
  for (auto mode : {SensitivityMode::kOneAtATime, SensitivityMode::kAllButOne}) {
    const bool all_but = mode == SensitivityMode::kAllButOne;
    const auto table = torchqat::tools::sensitivity(*model, eval_fn, SensitivityOptions().mode(mode));
    REQUIRE(table.float_score == 0.0);
    REQUIRE(table.quant_score == quant);
    REQUIRE(table.rows.size() == 3);
    for (const auto& r : table.rows) {
      INFO(r.layer);
      const size_t i = r.layer == "0" ? 0 : (r.layer == "2" ? 1 : 2);
      REQUIRE(r.score == only(i, all_but));
      REQUIRE(r.sensitivity == (all_but ? r.score - quant : 0.0 - r.score));
    }
    REQUIRE(table.rows[0].layer == "2");
    REQUIRE(table.rows[0].rank == 1);
    REQUIRE(table.rows[0].sensitivity >= table.rows[1].sensitivity);
    REQUIRE(table.rows[1].sensitivity >= table.rows[2].sensitivity);
    REQUIRE(table.str().find("   1  2      ") != std::string::npos);
  }
  // Every quantizer is enabled again and the score is the fully quantized one.
  REQUIRE(eval_fn() == quant);
  // layers restricts the rows; partial_quantize keeps the most sensitive float.
  const auto some = torchqat::tools::sensitivity(*model, eval_fn, SensitivityOptions().layers({"[02]"}));
  REQUIRE(some.rows.size() == 2);
  const auto names = torchqat::tools::partial_quantize(*model, eval_fn, 1);
  REQUIRE(names == std::vector<std::string>{"2"});
  for (auto& q : layers[1].second) REQUIRE(q->disabled());
  REQUIRE_FALSE(layers[0].second[0]->disabled());
}

TEST_CASE("a QuantLSTM is one quantized layer with all its quantizers", "[tools][sensitivity]") {
  torch::nn::Sequential model(tqnn::QuantLSTM(torch::nn::LSTMOptions(4, 3).num_layers(2)));
  const auto layers = torchqat::tools::quantized_layers(*model);
  REQUIRE(layers.size() == 1);
  REQUIRE(layers[0].first == "0");
  REQUIRE(layers[0].second.size() == 4);
}

TEST_CASE("sensitivity restores the switches when eval_fn throws", "[tools][sensitivity]") {
  auto model = make_model();
  int calls = 0;
  auto eval_fn = [&]() -> double {
    if (++calls == 2) throw std::runtime_error("eval failed");
    return 1.0;
  };
  REQUIRE_THROWS_WITH(torchqat::tools::sensitivity(*model, eval_fn), "eval failed");
  for (const auto& e : torchqat::quantizers(*model)) REQUIRE_FALSE(e.quantizer->disabled());
}
