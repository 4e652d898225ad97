// The C++ TensorQuantizer module: descriptor, amax buffer, state machine, serialization.
#include "catch_torch.h"
#include <torch/torch.h>

#include <sstream>

#include "reference.h"
#include "torchqat/ops.h"
#include "torchqat/tensor_quantizer.h"

using torchqat::QuantDescriptor;
using torchqat::TensorQuantizer;

TEST_CASE("descriptor validation names the field", "[quantizer]") {
  CHECK_THROWS_WITH(TensorQuantizer(QuantDescriptor().num_bits(1)), Catch::Contains("num_bits"));
  CHECK_THROWS_WITH(TensorQuantizer(QuantDescriptor().calib_method("kl")), Catch::Contains("calib_method"));
  CHECK_THROWS_WITH(TensorQuantizer(QuantDescriptor().amax(std::vector<float>{-1.0f})), Catch::Contains("amax"));
}

TEST_CASE("a quantizer with amax fake-quantizes, disabled passes through", "[quantizer]") {
  TensorQuantizer q(QuantDescriptor().amax(std::vector<float>{2.0f}));
  auto x = torch::randn({3, 4}) * 3;
  REQUIRE(torch::equal(q(x), torchqat::fake_quant(x, torch::tensor(2.0f))));
  q->disable();
  REQUIRE(torch::equal(q(x), x));
  q->enable();
  q->disable_quant();
  REQUIRE(torch::equal(q(x), x));
}

TEST_CASE("per-channel amax set on a weight quantizer", "[quantizer]") {
  TensorQuantizer q(torchqat::quant_desc_8bit_weight_per_channel());
  auto w = torch::randn({4, 3, 3, 3});
  auto amax = w.abs().amax({1, 2, 3}, true);
  q->set_amax(amax);
  REQUIRE(torch::equal(q(w), torchqat::fake_quant(w, amax)));
  CHECK_THROWS_WITH(q->set_amax(torch::ones({2})), Catch::Contains("changing the shape of amax"));
  CHECK_THROWS_WITH(q->set_amax(torch::full({4, 1, 1, 1}, -1.0f)), Catch::Contains("amax must be >= 0"));
}

TEST_CASE("_amax is saved and loaded under the pytorch-quantization key", "[quantizer]") {
  TensorQuantizer a(QuantDescriptor().amax(std::vector<float>{1.5f}));
  auto names = a->named_buffers();
  REQUIRE(names.contains("_amax"));
  std::stringstream buf;
  torch::save(a, buf);
  TensorQuantizer b(QuantDescriptor().amax(std::vector<float>{0.5f}));
  torch::load(b, buf);
  REQUIRE(b->amax().item<float>() == 1.5f);
}

TEST_CASE("learned amax is a parameter and receives the LSQ gradient", "[quantizer]") {
  TensorQuantizer q(QuantDescriptor().learn_amax(true).amax(std::vector<float>{1.0f}));
  REQUIRE(q->named_parameters().contains("_amax"));
  torch::manual_seed(2);
  auto x = (torch::randn({4, 16}) * 2).requires_grad_();  // a batch of 4 samples of 16 elements
  q(x).pow(2).sum().backward();
  REQUIRE(q->amax().grad().defined());
  // Against autograd of the written-out LSQ fake quant in double (tests/cpp/reference.h).
  auto xr = x.detach().to(torch::kDouble).requires_grad_();
  auto ar = torch::tensor(1.0, torch::kDouble).requires_grad_();
  torchqat_test::lsq_fake_quant(xr, ar).pow(2).sum().backward();
  const double want = ar.grad().item<double>() * torchqat_test::lsq_grad_scale(16);  // N_F: one sample
  REQUIRE(want != 0.0);
  // float32 against float64 over 64 terms: 1e-4 relative; a wrong LSQ scale or sign is far outside.
  REQUIRE(q->amax().grad().item<float>() == Approx(want).epsilon(1e-4));
  // x: the STE mask |x| <= amax applied to d(y^2)/dy = 2y.
  const auto y = torchqat::fake_quant(x.detach(), torch::tensor(1.0f));
  REQUIRE(torch::allclose(x.grad(), torch::where(x.detach().abs() <= 1.0f, 2 * y, torch::zeros_like(y))));
}

TEST_CASE("load_calib_amax before calibration is an error, calib mode then loads max amax", "[quantizer][errors]") {
  TensorQuantizer q;
  CHECK_THROWS_WITH(q->load_calib_amax(), Catch::Contains("no calibrator"));
  q->enable_calib();
  CHECK_THROWS_WITH(q->load_calib_amax(), Catch::Contains("has not seen any tensor"));
  q->disable_quant();
  auto x = torch::tensor({-3.0f, 1.0f});
  REQUIRE(torch::equal(q(x), x));
  q->load_calib_amax();
  REQUIRE(q->amax().item<float>() == 3.0f);
}

TEST_CASE("clone keeps an amax set after construction", "[quantizer]") {
  // Cloneable::clone rebuilds buffers with reset(); an amax from set_amax / load_calib_amax / a
  // checkpoint is not the descriptor's, and clone used to fail on the buffer count.
  TensorQuantizer q(QuantDescriptor().axis(std::vector<int64_t>{0}));
  q->set_amax(torch::tensor({1.0f, 2.0f, 3.0f}).reshape({3, 1}));
  q->disable_quant();
  auto c = std::dynamic_pointer_cast<torchqat::TensorQuantizerImpl>(q->clone());
  REQUIRE(c);
  REQUIRE(c->has_amax());
  CHECK(torch::equal(c->amax(), q->amax()));
  CHECK(c->amax().data_ptr() != q->amax().data_ptr());  // a copy, not shared
  CHECK(c->named_buffers().size() == 1);
  CHECK_FALSE(c->quant_enabled());
  c->set_amax(torch::ones({3, 1}));
  CHECK(q->amax()[2].item<float>() == 3.0f);

  // A calibrated quantizer (amax from its calibrator) clones too, and quantizes the same.
  TensorQuantizer cal;
  auto x = torch::randn({64}) * 2;
  cal->enable_calib();
  cal->disable_quant();
  cal(x);
  cal->load_calib_amax();
  cal->disable_calib();
  cal->enable_quant();
  auto cc = std::dynamic_pointer_cast<torchqat::TensorQuantizerImpl>(cal->clone());
  CHECK(torch::equal(cc->forward(x), cal(x)));

  // An explicit reset() still returns to the descriptor's state (no amax here).
  cal->reset();
  CHECK_FALSE(cal->has_amax());

  // A learned amax (a parameter) set to another value clones with it.
  TensorQuantizer learned(QuantDescriptor().learn_amax(true));
  learned->set_amax(torch::tensor(4.0f));
  auto lc = std::dynamic_pointer_cast<torchqat::TensorQuantizerImpl>(learned->clone());
  CHECK(lc->amax().item<float>() == 4.0f);
  CHECK(lc->named_parameters().size() == 1);
}

TEST_CASE("a two-axis quantizer keeps one amax per dim-0 and dim-1 pair when dynamic and when calibrated", "[quantizer]") {
  TensorQuantizer q(QuantDescriptor().axis(std::vector<int64_t>{0, 1}));
  auto w = torch::randn({4, 3, 3, 3});
  const auto amax = w.abs().amax({2, 3}, /*keepdim=*/true);
  // The reference: each [3, 3] slice quantized with its own per-tensor amax.
  auto ref = torch::empty_like(w);
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t c = 0; c < 3; ++c)
      ref[k][c] = torch::fake_quantize_per_tensor_affine(w[k][c], amax[k][c].item<float>() / 127, 0, -128, 127);
  CHECK(torch::allclose(q(w), ref, 0.0, 1e-6));
  q->enable_calib();
  q->disable_quant();
  q(w);
  q->load_calib_amax();
  q->disable_calib();
  q->enable_quant();
  REQUIRE(q->amax().sizes() == amax.sizes());
  CHECK(torch::equal(q->amax(), amax));
  CHECK(torch::allclose(q(w), ref, 0.0, 1e-6));
}
