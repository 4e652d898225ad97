// torchqat::nn::QuantLSTM / QuantLSTMCell: with quantizers disabled they equal torch::nn::LSTM /
// LSTMCell bit for bit; enabled, they equal the LSTM equations on operands fake-quantized by
// torch's own fake_quantize_per_{tensor,channel}_affine, in pytorch-quantization's layout (input
// quantizer on cat([x_t, h_{t-1}]) each step, per-row weight quantizer on cat([W_ih, W_hh])).
#include "catch_torch.h"
#include <torch/torch.h>

#include <sstream>

#include "torchqat/nn/quant_lstm.h"

namespace F = torch::nn::functional;
namespace tqnn = torchqat::nn;

namespace {

at::Tensor fq_tensor(const at::Tensor& x, double amax) {
  return at::fake_quantize_per_tensor_affine(x, amax / 127, 0, -128, 127);
}

at::Tensor fq_rows(const at::Tensor& w) {
  auto scale = (w.detach().abs().amax({1}) / 127).to(at::kFloat);
  return at::fake_quantize_per_channel_affine(w, scale, torch::zeros({w.size(0)}, at::kInt), 0, -128, 127);
}

// One step of the LSTM equations on fake-quantized operands (dynamic amax when in_amax < 0).
std::tuple<at::Tensor, at::Tensor> ref_cell(const at::Tensor& x, const at::Tensor& h, const at::Tensor& c,
                                            const std::vector<at::Tensor>& w, double in_amax) {
  auto xh = torch::cat({x, h}, 1);
  auto parts = fq_tensor(xh, in_amax < 0 ? xh.abs().max().item<double>() : in_amax)
                   .split_with_sizes({x.size(1), h.size(1)}, 1);
  auto wq = fq_rows(torch::cat({w[0], w[1]}, 1)).split_with_sizes({w[0].size(1), w[1].size(1)}, 1);
  auto gates = F::linear(parts[0], wq[0], w.size() > 2 ? w[2] : at::Tensor()) +
               F::linear(parts[1], wq[1], w.size() > 2 ? w[3] : at::Tensor());
  auto g = gates.chunk(4, 1);
  auto c1 = torch::sigmoid(g[1]) * c + torch::sigmoid(g[0]) * torch::tanh(g[2]);
  return {torch::sigmoid(g[3]) * torch::tanh(c1), c1};
}

// The stack over a time-major input.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ref_lstm(tqnn::QuantLSTM& m, at::Tensor x, const at::Tensor& h0,
                                                        const at::Tensor& c0, double in_amax) {
  const int64_t D = m->options.bidirectional() ? 2 : 1;
  std::vector<at::Tensor> hs, cs;
  for (int64_t layer = 0; layer < m->options.num_layers(); ++layer) {
    std::vector<at::Tensor> outs;
    for (int64_t d = 0; d < D; ++d) {
      const int64_t l = layer * D + d;
      at::Tensor h = h0[l], c = c0[l];
      std::vector<at::Tensor> ys(x.size(0));
      for (int64_t i = 0; i < x.size(0); ++i) {
        const int64_t t = d ? x.size(0) - 1 - i : i;
        std::tie(h, c) = ref_cell(x[t], h, c, m->layer_parameters(l), in_amax);
        ys[t] = h;
      }
      outs.push_back(torch::stack(ys));
      hs.push_back(h);
      cs.push_back(c);
    }
    x = torch::cat(outs, -1);
  }
  return {x, torch::stack(hs), torch::stack(cs)};
}

void disable_all(torch::nn::Module& m) {
  for (auto& mod : m.modules()) {
    if (auto* q = dynamic_cast<torchqat::TensorQuantizerImpl*>(mod.get())) q->disable();
  }
}

}  // namespace

TEST_CASE("QuantLSTM with quantizers disabled equals torch::nn::LSTM bit for bit", "[nn][lstm]") {
  torch::manual_seed(0);
  for (bool bidir : {false, true}) {
    for (bool batch_first : {false, true}) {
      torch::nn::LSTM ref(torch::nn::LSTMOptions(5, 7).num_layers(2).bidirectional(bidir).batch_first(batch_first));
      tqnn::QuantLSTM m(ref);
      disable_all(*m);
      auto x = torch::randn({4, 3, 5});
      const int64_t L = 2 * (bidir ? 2 : 1);
      auto hx = std::make_tuple(torch::randn({L, batch_first ? 4 : 3, 7}), torch::randn({L, batch_first ? 4 : 3, 7}));
      auto [y, hc] = m(x, hx);
      auto [y_ref, hc_ref] = ref(x, hx);
      REQUIRE(torch::equal(y, y_ref));
      REQUIRE(torch::equal(std::get<0>(hc), std::get<0>(hc_ref)));
      REQUIRE(torch::equal(std::get<1>(hc), std::get<1>(hc_ref)));
      REQUIRE(torch::equal(std::get<0>(m(x)), std::get<0>(ref(x))));
    }
  }
  SECTION("state-dict keys are torch::nn::LSTM's plus the quantizer lists") {
    tqnn::QuantLSTM m(torch::nn::LSTMOptions(4, 8).num_layers(2).bidirectional(true));
    torch::nn::LSTM ref(torch::nn::LSTMOptions(4, 8).num_layers(2).bidirectional(true));
    REQUIRE(m->named_parameters().keys() == ref->named_parameters().keys());
    REQUIRE(m->num_quantizer_pairs() == 4);
    for (int64_t l = 0; l < 4; ++l) {
      m->input_quantizer(l)->set_amax(torch::tensor(1.0f));
      m->weight_quantizer(l)->set_amax(torch::ones({32, 1}));
    }
    auto buffers = m->named_buffers().keys();
    std::vector<std::string> expected;
    for (int l = 0; l < 4; ++l) expected.push_back("_input_quantizers." + std::to_string(l) + "._amax");
    for (int l = 0; l < 4; ++l) expected.push_back("_weight_quantizers." + std::to_string(l) + "._amax");
    REQUIRE(buffers == expected);
  }
}

TEST_CASE("QuantLSTM quantized equals the fake_quantize reference", "[nn][lstm]") {
  torch::manual_seed(1);
  tqnn::QuantLSTM m(torch::nn::LSTMOptions(5, 7).num_layers(2).bidirectional(true));
  auto x = torch::randn({6, 3, 5});
  auto h0 = torch::randn({4, 3, 7}), c0 = torch::randn({4, 3, 7});
  SECTION("dynamic amax") {
    auto [y, hc] = m(x, std::make_tuple(h0, c0));
    auto [y_ref, h_ref, c_ref] = ref_lstm(m, x, h0, c0, -1);
    REQUIRE(torch::allclose(y, y_ref, 0, 1e-6));
    REQUIRE(torch::allclose(std::get<0>(hc), h_ref, 0, 1e-6));
    REQUIRE(torch::allclose(std::get<1>(hc), c_ref, 0, 1e-6));
    disable_all(*m);
    REQUIRE((std::get<0>(m(x, std::make_tuple(h0, c0))) - y).abs().max().item<double>() > 1e-4);
  }
  SECTION("calibrated input amax, batch_first") {
    tqnn::QuantLSTM bf(torch::nn::LSTMOptions(5, 7).num_layers(2).bidirectional(true).batch_first(true));
    for (int64_t l = 0; l < 4; ++l) bf->input_quantizer(l)->set_amax(torch::tensor(1.5f));
    auto [y, hc] = bf(x.transpose(0, 1), std::make_tuple(h0, c0));
    auto [y_ref, h_ref, c_ref] = ref_lstm(bf, x, h0, c0, 1.5);
    REQUIRE(torch::allclose(y.transpose(0, 1), y_ref, 0, 1e-6));
    REQUIRE(torch::allclose(std::get<1>(hc), c_ref, 0, 1e-6));
  }
}

TEST_CASE("QuantLSTMCell equals torch::nn::LSTMCell disabled and the reference enabled", "[nn][lstm]") {
  torch::manual_seed(2);
  torch::nn::LSTMCell ref(torch::nn::LSTMCellOptions(5, 7));
  tqnn::QuantLSTMCell cell(ref);
  auto x = torch::randn({3, 5});
  auto hx = std::make_tuple(torch::randn({3, 7}), torch::randn({3, 7}));
  auto [h, c] = cell(x, hx);
  auto [h_ref, c_ref] = ref_cell(x, std::get<0>(hx), std::get<1>(hx),
                                 {ref->weight_ih, ref->weight_hh, ref->bias_ih, ref->bias_hh}, -1);
  REQUIRE(torch::allclose(h, h_ref, 0, 1e-6));
  REQUIRE(torch::allclose(c, c_ref, 0, 1e-6));
  disable_all(*cell);
  auto [h2, c2] = cell(x, hx);
  auto [h2_ref, c2_ref] = ref(x, hx);
  REQUIRE(torch::equal(h2, h2_ref));
  REQUIRE(torch::equal(c2, c2_ref));
  REQUIRE(cell->named_parameters().keys() == ref->named_parameters().keys());
}

TEST_CASE("QuantLSTM refuses bad options and inputs by name", "[nn][lstm]") {
  REQUIRE_THROWS_WITH(tqnn::QuantLSTM(torch::nn::LSTMOptions(4, 8).proj_size(2)),
                      Catch::Contains("proj_size > 0 (LSTM with projections) is not supported, got proj_size=2"));
  REQUIRE_THROWS_WITH(tqnn::QuantLSTM(torch::nn::LSTMOptions(4, 0)), Catch::Contains("hidden_size must be greater"));
  tqnn::QuantLSTM m(4, 8);
  REQUIRE_THROWS_WITH(m(torch::randn({3, 2, 5})), Catch::Contains("input.size(-1) must be equal to input_size"));
  REQUIRE_THROWS_WITH(m(torch::randn({3, 2, 4}), std::make_tuple(torch::zeros({1, 3, 8}), torch::zeros({1, 2, 8}))),
                      Catch::Contains("expected hidden[0] size [1, 2, 8]"));
  REQUIRE_THROWS_AS(m->input_quantizer(1), c10::IndexError);
  std::ostringstream s;
  s << *m;
  REQUIRE(s.str().find("torchqat::nn::QuantLSTM(input_size=4, hidden_size=8") != std::string::npos);
}
