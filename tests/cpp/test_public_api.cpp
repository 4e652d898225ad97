// Public C++ functions no other test calls, each checked against a value computed here
// independently of torchqat: calib::make_calibrator, TensorQuantizer's calibrator slot
// (set_calibrator / calibrator()), load_calib_amax with the histogram methods, maxbound(), and
// HistogramCalibrator::pending_zeros.
#include <torch/torch.h>

#include "catch_torch.h"

#include <cmath>
#include <limits>

#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calib/make_calibrator.h"
#include "torchqat/calib/max_calibrator.h"
#include "torchqat/tensor_quantizer.h"

using torchqat::QuantDescriptor;
using torchqat::TensorQuantizer;
namespace calib = torchqat::calib;

namespace {

// pytorch-quantization's percentile rule, written out: 2048 bins over [0, max|x|], the left edge of
// the bin where the CDF first reaches p %.
double reference_percentile(const at::Tensor& x, double p) {
  const auto a = x.abs().to(torch::kDouble).flatten();
  const double vmax = a.max().item<double>();
  const auto counts = torch::histc(a, 2048, 0.0, vmax);
  const auto cdf = counts.cumsum(0) / counts.sum();
  const auto idx = (cdf < p / 100.0).sum().item<int64_t>();
  return idx * vmax / 2048.0;
}

// The mean squared error of 8-bit signed fake quant of x with amax, in double.
double quant_mse(const at::Tensor& x, double amax) {
  const auto v = x.to(torch::kDouble);
  const auto q = torch::clamp(torch::round(v * 127.0 / amax), -127, 127) * amax / 127.0;
  return (q - v).pow(2).mean().item<double>();
}

TensorQuantizer calibrated_histogram_quantizer(const at::Tensor& data) {
  TensorQuantizer q(QuantDescriptor().calib_method("histogram"));
  q->disable_quant();
  q->enable_calib();
  for (const auto& batch : data.chunk(4)) q->forward(batch);
  q->disable_calib();
  q->enable_quant();
  return q;
}

}  // namespace

TEST_CASE("make_calibrator builds the calibrator the descriptor names", "[calib][api]") {
  auto max_c = calib::make_calibrator(QuantDescriptor().axis(std::vector<int64_t>{0}));
  auto* as_max = dynamic_cast<calib::MaxCalibrator*>(max_c.get());
  REQUIRE(as_max != nullptr);
  CHECK(as_max->axis() == std::vector<int64_t>{0});
  const auto w = torch::randn({3, 5});
  max_c->collect(w);
  CHECK(torch::equal(max_c->compute_amax().value().flatten(), std::get<0>(w.abs().max(1))));

  auto hist_c = calib::make_calibrator(QuantDescriptor().calib_method("histogram").num_bits(6));
  auto* as_hist = dynamic_cast<calib::HistogramCalibrator*>(hist_c.get());
  REQUIRE(as_hist != nullptr);
  CHECK(as_hist->num_bits() == 6);
  CHECK_THROWS_WITH(calib::make_calibrator(QuantDescriptor().calib_method("histogram").axis(std::vector<int64_t>{0})),
                    Catch::Contains("per tensor only"));
}

TEST_CASE("set_calibrator replaces the calibrator the quantizer collects into", "[quantizer][api]") {
  TensorQuantizer q(QuantDescriptor().axis(std::vector<int64_t>{0}));
  auto mine = std::make_shared<calib::MaxCalibrator>(8, std::vector<int64_t>{0});
  q->set_calibrator(mine);
  CHECK(q->calibrator() == mine);
  q->enable_calib();  // keeps the calibrator set
  CHECK(q->calibrator() == mine);
  q->disable_quant();
  const auto x = torch::randn({4, 7});
  q->forward(x);
  q->forward(x * 2);
  q->load_calib_amax();
  CHECK(torch::equal(q->amax().flatten(), std::get<0>((x * 2).abs().max(1))));
  CHECK(mine->calib_amax().defined());
}

TEST_CASE("load_calib_amax with percentile and mse matches references computed here", "[quantizer][calib][api]") {
  torch::manual_seed(5);
  auto data = torch::randn({4096});
  data.index_put_({0}, 12.0);  // one outlier: percentile and entropy clip it
  auto q = calibrated_histogram_quantizer(data);
  const double width = data.abs().max().item<double>() / 2048.0;

  calib::AmaxOptions pct;
  pct.method = "percentile";
  pct.percentile = 99.0;
  q->load_calib_amax(pct);
  CHECK(std::abs(q->amax().item<double>() - reference_percentile(data, 99.0)) <= width);

  calib::AmaxOptions mse;
  mse.method = "mse";
  q->load_calib_amax(mse);
  const double got = q->amax().item<double>();
  double best = std::numeric_limits<double>::infinity();
  for (int64_t i = 128; i <= 2048; ++i) best = std::min(best, quant_mse(data, i * width));
  // The search minimises the error of bin centres, not of the values: within 2 % of brute force.
  CHECK(quant_mse(data, got) <= best * 1.02);

  calib::AmaxOptions ent;
  ent.method = "entropy";
  q->load_calib_amax(ent);
  const double e = q->amax().item<double>();
  // The KL search's answer for 4096 standard normal values lies well inside the outlier's range and
  // above the bulk's 99th percentile (test_calibrators.py checks it against a numpy reference).
  CHECK(e > reference_percentile(data, 99.0));
  CHECK(e < 0.5 * data.abs().max().item<double>());
}

TEST_CASE("maxbound is 2^(bits-1+unsigned) - 1", "[quantizer][api]") {
  CHECK(TensorQuantizer(QuantDescriptor())->maxbound() == 127);
  CHECK(TensorQuantizer(QuantDescriptor().num_bits(4))->maxbound() == 7);
  CHECK(TensorQuantizer(QuantDescriptor().is_unsigned(true))->maxbound() == 255);
  CHECK(TensorQuantizer(QuantDescriptor().num_bits(16))->maxbound() == 32767);
}

TEST_CASE("pending_zeros counts the zeros seen before any range, then joins bin 0", "[calib][api]") {
  calib::HistogramCalibrator c;
  c.collect(torch::zeros({10}));
  c.collect(torch::zeros({3, 2}));
  CHECK(c.pending_zeros() == 16);
  CHECK_FALSE(c.histogram().defined());
  c.collect(torch::tensor({0.5f, 1.0f}));
  CHECK(c.pending_zeros() == 0);
  const auto h = c.histogram();
  CHECK(h.sum().item<int64_t>() == 18);
  CHECK(h[0].item<int64_t>() == 16);
  CHECK(h[-1].item<int64_t>() == 1);  // 1.0 is the range's top: last bin
}
