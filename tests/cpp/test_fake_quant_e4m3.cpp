// fake_quant_e4m3 from C++ against ATen's own float8_e4m3fn cast, its gradients and its errors.
#include "catch_torch.h"
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "torchqat/calib/amax_search.h"
#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/ops.h"
#include "torchqat/tensor_quantizer.h"

using torchqat::fake_quant_e4m3;

namespace {

// e4m3(x / step) * step, step = amax / 448; ATen's cast turns |v| >= 464 and Inf into NaN and the
// op saturates, so the reference clamps first.
at::Tensor reference(const at::Tensor& x, const at::Tensor& amax) {
  const auto step = amax / 448.0f;
  return (x / step).clamp(-448.0, 448.0).to(at::kFloat8_e4m3fn).to(torch::kFloat) * step;
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  const auto nan = a.isnan();
  if (!torch::equal(nan, b.isnan())) return false;
  return torch::equal(a.index({~nan}).view(torch::kInt), b.index({~nan}).view(torch::kInt));
}

}  // namespace

TEST_CASE("fake_quant_e4m3 equals ATen's float8_e4m3fn cast on every float32 class", "[ops][fp8]") {
  // Every E4M3 value, the midpoints between neighbours (ties to even) and their one-ulp neighbours.
  auto grid = torch::arange(256, torch::kInt).to(torch::kByte).view(at::kFloat8_e4m3fn).to(torch::kFloat);
  grid = std::get<0>(at::_unique(grid.index({~grid.isnan()}), /*sorted=*/true));
  const auto n = grid.numel();
  const auto mid = (grid.slice(0, 1, n) + grid.slice(0, 0, n - 1)) / 2;
  const float inf = std::numeric_limits<float>::infinity();
  const auto up = torch::nextafter(mid, torch::full_like(mid, inf));
  const auto down = torch::nextafter(mid, torch::full_like(mid, -inf));
  // A stride through all 2^32 float32 bit patterns: normals, float32 subnormals, Inf, NaN.
  const auto stride = torch::arange(0, int64_t{1} << 32, 65537, torch::kLong).to(torch::kInt).view(torch::kFloat);
  const auto edge = torch::tensor({447.0f, 448.0f, 455.9f, 456.0f, 464.0f, 464.5f, 480.0f, 1e30f, inf, -0.0f,
                                   std::ldexp(1.0f, -6), std::ldexp(1.0f, -9), std::ldexp(1.0f, -10), 3e-3f,
                                   std::numeric_limits<float>::denorm_min(), std::nanf("")});
  auto x = torch::cat({grid, mid, up, down, stride, edge});
  x = torch::cat({x, -x});

  const auto one = torch::full({}, 448.0f);  // step exactly 1: the bare cast
  const auto y = fake_quant_e4m3(x, one);
  REQUIRE(same_bits(y, reference(x, one)));
  const auto plain = x.to(at::kFloat8_e4m3fn).to(torch::kFloat);
  const auto finite = ~plain.isnan();
  REQUIRE(same_bits(y.index({finite}), plain.index({finite})));
  // Saturation where ATen's cast gives NaN; NaN stays NaN.
  REQUIRE(torch::equal(fake_quant_e4m3(torch::tensor({500.0f, -inf, inf}), one), torch::tensor({448.0f, -448.0f, 448.0f})));
  REQUIRE(fake_quant_e4m3(torch::tensor({std::nanf("")}), one).isnan().item<bool>());

  for (float a : {0.3f, 2.5f, 9.0f}) {
    INFO("amax " << a);
    const auto amax = torch::full({}, a);
    REQUIRE(same_bits(fake_quant_e4m3(x, amax), reference(x, amax)));
  }
}

TEST_CASE("fake_quant_e4m3 per channel, half inputs and amax 0", "[ops][fp8]") {
  torch::manual_seed(7);
  const auto x = torch::randn({5, 4, 3, 3}) * 3;
  auto amax = torch::rand({5, 1, 1, 1}) * 2 + 0.1;
  amax.index_put_({0}, 0.0f);
  auto ref = reference(x, amax);
  ref.index_put_({0}, x.index({0}) * 0.0f);  // a channel with amax 0 quantizes to (signed) 0
  REQUIRE(same_bits(fake_quant_e4m3(x, amax), ref));
  REQUIRE(same_bits(fake_quant_e4m3(x, amax.reshape({5}), 0), ref));
  REQUIRE(same_bits(fake_quant_e4m3(x.contiguous(at::MemoryFormat::ChannelsLast), amax).contiguous(), ref));
  for (auto dt : {torch::kHalf, torch::kBFloat16}) {
    const auto xh = x.to(dt);
    const auto y = fake_quant_e4m3(xh, torch::full({}, 1.7f));
    REQUIRE(y.scalar_type() == dt);
    REQUIRE(torch::equal(y, reference(xh.to(torch::kFloat), torch::full({}, 1.7f)).to(dt)));
  }
}

TEST_CASE("fake_quant_e4m3 backward: the STE mask and the LSQ amax gradient", "[ops][fp8][autograd]") {
  torch::manual_seed(8);
  auto x = (torch::randn({6, 7}) * 2).requires_grad_();
  auto amax = torch::full({}, 1.2f).requires_grad_();
  const auto g = torch::randn({6, 7});
  fake_quant_e4m3(x, amax).backward(g);
  const auto inside = x.detach().abs() <= 1.2f;
  REQUIRE(torch::equal(x.grad(), torch::where(inside, g, torch::zeros_like(g))));
  // y = s * (v + round error), v = x / s clamped to [-448, 448], s = amax / 448, written with ATen.
  auto ar = torch::full({}, 1.2, torch::kDouble).requires_grad_();
  const auto xd = x.detach().to(torch::kDouble);
  const auto v = (xd / (ar / 448.0)).clamp(-448.0, 448.0);
  const auto q = v + (v.to(torch::kFloat).to(at::kFloat8_e4m3fn).to(torch::kDouble) - v).detach();
  (q * (ar / 448.0)).backward(g.to(torch::kDouble));
  const double want = ar.grad().item<double>() / std::sqrt(7.0 * 448.0);  // N_F: one sample (of 6) has 7
  REQUIRE(want != 0.0);
  REQUIRE(amax.grad().item<float>() == Approx(want).epsilon(1e-4));
}

TEST_CASE("fake_quant_e4m3 refuses bad amax naming the argument", "[ops][fp8]") {
  const auto x = torch::randn({3, 4});
  REQUIRE_THROWS_WITH(fake_quant_e4m3(x, torch::full({}, -1.0f)),
                      Catch::Contains("torchqat.fake_quant_e4m3: amax must be >= 0, got -1"));
  REQUIRE_THROWS_WITH(fake_quant_e4m3(x, torch::ones({5}), 1), Catch::Contains("does not match x of shape [3, 4]"));
}

TEST_CASE("TensorQuantizer with an FP8 E4M3 descriptor: max and mse calibration, forward", "[quantizer][fp8]") {
  torch::manual_seed(9);
  const auto desc = torchqat::quant_desc_e4m3_per_tensor();
  REQUIRE(desc.is_e4m3());
  REQUIRE(desc.str() == "QuantDescriptor(e4m3 fake per-tensor)");
  torchqat::TensorQuantizer q(desc);
  REQUIRE(q->maxbound() == 448);
  const auto x = torch::randn({4, 6, 5}) * 2;
  q->enable_calib();
  q->disable_quant();
  q(x);
  q->load_calib_amax();
  q->disable_calib();
  q->enable_quant();
  REQUIRE(torch::equal(q->amax(), x.abs().max()));
  REQUIRE(same_bits(q(x * 1.5), reference(x * 1.5, q->amax())));

  // Histogram calibration searches with E4M3: the calibrator's mse equals amax_mse with kE4M3,
  // and differs from the 8-bit search on the same data.
  torchqat::TensorQuantizer h(torchqat::quant_desc_e4m3_per_tensor().calib_method("histogram"));
  h->enable_calib();
  const auto y = torch::randn({20000}) * torch::rand({20000}).pow(4) * 4;
  h(y);
  torchqat::calib::AmaxOptions o;
  o.method = "mse";
  h->load_calib_amax(o);
  auto* hc = dynamic_cast<torchqat::calib::HistogramCalibrator*>(h->calibrator().get());
  REQUIRE(hc != nullptr);
  const auto hist = hc->histogram().contiguous();
  const std::vector<int64_t> counts(hist.data_ptr<int64_t>(), hist.data_ptr<int64_t>() + hist.numel());
  const double fp8 = torchqat::calib::amax_mse(counts, hc->bin_width(), 8, false, 128, 1, torchqat::QuantFormat::kE4M3);
  const double int8 = torchqat::calib::amax_mse(counts, hc->bin_width(), 8, false, 128, 1);
  REQUIRE(h->amax().item<float>() == static_cast<float>(fp8));
  REQUIRE(fp8 != int8);
}
