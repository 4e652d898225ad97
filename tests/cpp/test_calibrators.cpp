// The calibration ops (abs_max, histogram_abs) and the C++ calibrators: results against ATen,
// growth, the amax searches on hand-checkable histograms, and every refused input.
#include "catch_torch.h"
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "torchqat/calib/amax_search.h"
#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calib/max_calibrator.h"
#include "torchqat/calib/numpy_histogram.h"
#include "torchqat/calib/stats.h"
#include "torchqat/ops.h"

using namespace torchqat::calib;

namespace {

// torchqat's binning, written out: floor(float32 |x| * float32(1 / width)), clamped to the last bin.
at::Tensor reference_histogram(const at::Tensor& x, double width, int64_t bins) {
  const float inv = static_cast<float>(1.0 / width);
  auto a = x.to(at::kFloat).abs().reshape(-1);
  auto idx = at::floor(a * inv).clamp_max(static_cast<float>(bins - 1)).to(at::kLong);
  return at::bincount(idx, {}, bins);
}

AmaxOptions method(const std::string& m, double percentile = 99.99) {
  AmaxOptions o;
  o.method = m;
  o.percentile = percentile;
  return o;
}

}  // namespace

TEST_CASE("abs_max equals ATen's amax of |x| on every layout and dtype", "[calib][ops]") {
  torch::manual_seed(0);
  struct Case {
    at::Tensor x;
    std::vector<int64_t> keep;
  };
  std::vector<Case> cases = {
      {torch::randn({1000003}), {}},
      {torch::randn({16, 3, 3, 3}), {0}},
      {torch::randn({4, 6, 5, 5}), {1}},
      {torch::randn({4, 6, 5, 5}).contiguous(at::MemoryFormat::ChannelsLast), {1}},
      {torch::randn({3, 8, 33}), {-1}},
      {torch::randn({3, 8, 33}), {0, 2}},
      {torch::randn({9, 6}).t(), {0}},
      {torch::randn({5, 4, 3}), {0, 1, 2}},
      {torch::randn({2, 100003}), {0}},
      {torch::randn({2, 3, 4}).slice(2, 1, 3), {1}},  // not dense: copied first
  };
  for (const auto& c : cases) {
    for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16, at::kDouble}) {
      const auto x = c.x.to(dtype);
      const auto got = torchqat::abs_max(x, c.keep);
      at::Tensor want;
      if (c.keep.empty()) {
        want = x.abs().max().to(at::kFloat);
      } else {
        std::vector<int64_t> reduce;
        for (int64_t d = 0; d < x.dim(); ++d) {
          bool kept = false;
          for (int64_t k : c.keep) kept = kept || (k < 0 ? k + x.dim() : k) == d;
          if (!kept) reduce.push_back(d);
        }
        want = reduce.empty() ? x.abs().to(at::kFloat) : x.abs().amax(reduce, true).to(at::kFloat);
      }
      INFO("shape " << x.sizes() << " keep " << c.keep << " dtype " << dtype);
      REQUIRE(got.sizes() == want.sizes());
      REQUIRE(got.scalar_type() == at::kFloat);
      REQUIRE(torch::equal(got, want));
    }
  }
}

TEST_CASE("abs_max refuses NaN, Inf, empty input and bad keep_dims", "[calib][ops][errors]") {
  auto x = torch::randn({10, 10});
  x[3][4] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(torchqat::abs_max(x), c10::ValueError);
  CHECK_THROWS_WITH(torchqat::abs_max(x, {0}), Catch::Contains("NaN"));
  x[3][4] = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(torchqat::abs_max(x), Catch::Contains("Inf"));
  CHECK_THROWS_WITH(torchqat::abs_max(torch::randn({0, 3})), Catch::Contains("x is empty"));
  CHECK_THROWS_WITH(torchqat::abs_max(torch::randn({2, 3}), {2}), Catch::Contains("keep_dims entry 2"));
  CHECK_THROWS_AS(torchqat::abs_max(torch::ones({3}, at::kInt)), c10::TypeError);
}

TEST_CASE("histogram_abs counts |x| into int64 bins, accumulating", "[calib][ops]") {
  torch::manual_seed(1);
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16, at::kDouble}) {
    const auto x = (torch::randn({100001}) * 2).to(dtype);
    auto hist = torch::zeros({300}, at::kLong);
    torchqat::histogram_abs(x, hist, 0.02);
    REQUIRE(torch::equal(hist, reference_histogram(x, 0.02, 300)));  // past-the-end values: last bin
    torchqat::histogram_abs(x, hist, 0.02);
    REQUIRE(hist.sum().item<int64_t>() == 2 * x.numel());
  }
  // skip_zeros, and NaN/Inf are never counted.
  auto x = torch::tensor({0.0f, 0.0f, 0.5f, -1.5f, std::nanf(""), std::numeric_limits<float>::infinity()});
  auto hist = torch::zeros({4}, at::kLong);
  torchqat::histogram_abs(x, hist, 0.5, /*skip_zeros=*/true);
  REQUIRE(torch::equal(hist, torch::tensor({0, 1, 0, 1}, at::kLong)));
  // Channels-last input is read as it lies in memory.
  auto y = torch::randn({2, 3, 4, 5}).contiguous(at::MemoryFormat::ChannelsLast);
  auto h2 = torch::zeros({64}, at::kLong);
  torchqat::histogram_abs(y, h2, 0.1);
  REQUIRE(torch::equal(h2, reference_histogram(y.contiguous(), 0.1, 64)));
}

TEST_CASE("histogram_abs refuses bad arguments, naming them", "[calib][ops][errors]") {
  auto x = torch::randn({10});
  auto h = torch::zeros({8}, at::kLong);
  auto hf = torch::zeros({8});
  auto h2 = torch::zeros({2, 4}, at::kLong);
  CHECK_THROWS_WITH(torchqat::histogram_abs(x, hf, 0.1), Catch::Contains("hist must be int64"));
  CHECK_THROWS_WITH(torchqat::histogram_abs(x, h2, 0.1), Catch::Contains("hist must be 1-d"));
  CHECK_THROWS_WITH(torchqat::histogram_abs(x, h, 0.0), Catch::Contains("bin_width"));
  CHECK_THROWS_WITH(torchqat::histogram_abs(x, h, -1.0), Catch::Contains("bin_width"));
  CHECK_THROWS_WITH(torchqat::histogram_abs(x, h, std::nan("")), Catch::Contains("bin_width"));
  auto xi = torch::ones({3}, at::kInt);
  CHECK_THROWS_AS(torchqat::histogram_abs(xi, h, 0.1), c10::TypeError);
}

TEST_CASE("MaxCalibrator keeps a running abs-max per tensor and per channel", "[calib]") {
  MaxCalibrator per_tensor(8, {}, false, /*track_amax=*/true);
  REQUIRE_FALSE(per_tensor.compute_amax().has_value());
  per_tensor.collect(torch::tensor({1.0f, -3.0f}));
  per_tensor.collect(torch::tensor({2.0f, 0.5f}));
  REQUIRE(per_tensor.compute_amax()->item<float>() == 3.0f);
  REQUIRE(per_tensor.compute_amax()->dim() == 0);
  REQUIRE(per_tensor.amaxs().size() == 2);

  MaxCalibrator per_channel(8, {0}, false);
  auto x = torch::randn({4, 3, 2, 2});
  x[2].zero_();  // an all-zero channel gets amax 0
  per_channel.collect(x);
  per_channel.collect(x * 0.5);
  auto amax = *per_channel.compute_amax();
  REQUIRE(amax.sizes() == at::IntArrayRef({4, 1, 1, 1}));
  REQUIRE(torch::equal(amax, x.abs().amax({1, 2, 3}, true)));
  REQUIRE(amax[2].item<float>() == 0.0f);
  per_channel.reset();
  REQUIRE_FALSE(per_channel.compute_amax().has_value());
}

TEST_CASE("MaxCalibrator refuses a changing shape and NaN data", "[calib][errors]") {
  MaxCalibrator c(8, {1}, false);
  c.collect(torch::randn({2, 3, 4}));
  CHECK_THROWS_WITH(c.collect(torch::randn({2, 5, 4})), Catch::Contains("amax shape changed"));
  auto bad = torch::randn({2, 3, 4});
  bad[0][0][0] = std::nanf("");
  CHECK_THROWS_AS(c.collect(bad), c10::ValueError);
  CHECK_THROWS_WITH(MaxCalibrator(8, {3}, false).collect(torch::randn({2, 3})), Catch::Contains("axis 3"));
}

TEST_CASE("HistogramCalibrator grows by appending bins of the first width", "[calib]") {
  torch::manual_seed(2);
  HistogramCalibrator c(8, std::nullopt, false, 1024);
  std::vector<at::Tensor> batches = {torch::randn({5000}), torch::randn({5000}) * 3, torch::randn({5000}) * 0.5,
                                     torch::randn({5000}) * 7};
  for (const auto& b : batches) c.collect(b);
  const double width = c.bin_width();
  REQUIRE(width == Approx(batches[0].abs().max().item<float>() / 1024.0).epsilon(1e-12));
  // Each batch is counted against the range it saw (as np.histogram does per batch): a value on
  // the right edge of the range at that time stays in what was then the last bin.
  int64_t bins = 1024;
  at::Tensor want = torch::zeros({bins}, at::kLong);
  for (const auto& b : batches) {
    bins = std::max(bins, static_cast<int64_t>(std::ceil(b.abs().max().item<float>() / width)));
    want = torch::cat({want, torch::zeros({bins - want.numel()}, at::kLong)});
    want += reference_histogram(b, width, bins);
  }
  REQUIRE(c.histogram().numel() == bins);
  REQUIRE(torch::equal(c.histogram(), want));
}

TEST_CASE("HistogramCalibrator counts beyond 2^24 in one bin exactly", "[calib]") {
  HistogramCalibrator c(8, std::nullopt, false);
  auto x = torch::zeros({(int64_t{1} << 24) + 7});
  x[-1] = 1.0f;
  c.collect(x);
  REQUIRE(c.histogram()[0].item<int64_t>() == (int64_t{1} << 24) + 6);
}

TEST_CASE("HistogramCalibrator: all-zero data, zeros before the range, skip_zeros", "[calib]") {
  HistogramCalibrator zeros(8, std::nullopt, false);
  REQUIRE_FALSE(zeros.compute_amax(method("entropy")).has_value());
  zeros.collect(torch::zeros({100}));
  for (const char* m : {"entropy", "mse", "percentile"}) REQUIRE(zeros.compute_amax(method(m))->item<float>() == 0.0f);
  zeros.collect(torch::tensor({0.0f, 1.0f}));
  REQUIRE(zeros.histogram()[0].item<int64_t>() == 101);

  HistogramCalibrator skip(8, std::nullopt, false, 2048, /*skip_zeros=*/true);
  skip.collect(torch::tensor({0.0f, 0.0f, 0.5f, -1.0f}));
  REQUIRE(skip.histogram().sum().item<int64_t>() == 2);
}

TEST_CASE("HistogramCalibrator refuses bad arguments and NaN data", "[calib][errors]") {
  CHECK_THROWS_WITH(HistogramCalibrator(8, std::nullopt, false, 100), Catch::Contains("num_bins must be at least 128"));
  CHECK_THROWS_WITH(HistogramCalibrator(8, std::nullopt, true, 200), Catch::Contains("num_bins must be at least 256"));
  CHECK_THROWS_WITH(HistogramCalibrator(8, std::vector<int64_t>{0}, false), Catch::Contains("axis must be None"));
  HistogramCalibrator c(8, std::nullopt, false);
  c.collect(torch::randn({1000}));
  CHECK_THROWS_WITH(c.compute_amax(method("kl")), Catch::Contains("unknown calibration method 'kl'"));
  CHECK_THROWS_WITH(c.compute_amax(method("percentile", 0.0)), Catch::Contains("percentile must be in (0, 100]"));
  CHECK_THROWS_WITH(c.compute_amax(method("percentile", 100.5)), Catch::Contains("percentile must be in (0, 100]"));
  auto o = method("entropy");
  o.stride = 0;
  CHECK_THROWS_WITH(c.compute_amax(o), Catch::Contains("stride"));
  const auto before = c.histogram().clone();
  auto bad = torch::randn({10});
  bad[4] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(c.collect(bad), c10::ValueError);
  REQUIRE(torch::equal(c.histogram(), before));  // nothing of the refused batch was counted
}

TEST_CASE("amax searches on hand-checkable histograms", "[calib]") {
  // percentile: the left edge of the bin where the CDF reaches p.
  const std::vector<int64_t> four = {10, 20, 30, 40};
  REQUIRE(amax_percentile(four, 0.5, 10.0) == 0.0);
  REQUIRE(amax_percentile(four, 0.5, 30.0) == 0.5);
  REQUIRE(amax_percentile(four, 0.5, 31.0) == 1.0);
  REQUIRE(amax_percentile(four, 0.5, 100.0) == 1.5);
  CHECK_THROWS_AS(amax_percentile(four, 0.5, 0.0), c10::ValueError);

  // A flat histogram: with i = 256 every level merges two equal bins, so Q == P and nothing is
  // clipped (KL 0); every smaller i clips mass into bin i-1. amax = the right edge.
  std::vector<int64_t> flat(256, 1000);
  REQUIRE(amax_entropy(flat, 1.0, 8, false) == 256.0);

  // mse: with data in one bin, the best range puts a quantization level on its centre.
  std::vector<int64_t> spike(512, 0);
  spike[300] = 1000000;
  const double w = 0.01;
  const double amax = amax_mse(spike, w, 8, false);
  const float centre = static_cast<float>(300.5 * w);
  const auto q = torchqat::fake_quant(torch::tensor({centre}), torch::tensor(static_cast<float>(amax)), 8, false, true);
  REQUIRE(q.item<float>() == Approx(centre).epsilon(1e-6));
  CHECK_THROWS_WITH(amax_mse(spike, w, 8, false, 512), Catch::Contains("start_bin"));
  CHECK_THROWS_WITH(amax_entropy(spike, w, 8, false, 513), Catch::Contains("start_bin"));
  CHECK_THROWS_WITH(amax_entropy(spike, 0.0, 8, false), Catch::Contains("bin width"));
}

TEST_CASE("HistogramCalibrator merges state for distributed use", "[calib]") {
  torch::manual_seed(5);
  const auto x1 = torch::randn({1000});
  const auto x2 = torch::randn({1500}) * 3;
  // Two ranks bin with one width: each reserves the all-reduced max, then collects its own data;
  // the merged state is the sum of the histograms, grown to one length.
  const double vmax = std::max(x1.abs().max().item<double>(), x2.abs().max().item<double>());
  HistogramCalibrator a(8, std::nullopt, false), b(8, std::nullopt, false), whole(8, std::nullopt, false);
  for (auto* c : {&a, &b, &whole}) c->reserve_range(vmax);
  a.collect(x1);
  b.collect(x2);
  whole.collect(x1);
  whole.collect(x2);
  REQUIRE(a.bin_width() == b.bin_width());
  const int64_t n = std::max(a.histogram().numel(), b.histogram().numel());
  a.grow_to(n);
  b.grow_to(n);
  HistogramCalibrator merged(8, std::nullopt, false);
  merged.set_state(a.histogram() + b.histogram(), a.bin_width());
  REQUIRE(merged.histogram().sum().item<int64_t>() == 2500);
  REQUIRE(merged.bin_width() == whole.bin_width());
  REQUIRE(torch::equal(merged.histogram(), whole.histogram().narrow(0, 0, merged.histogram().numel())));
  REQUIRE(whole.histogram().narrow(0, n, whole.histogram().numel() - n).sum().item<int64_t>() == 0);
  for (const char* method : {"entropy", "percentile", "mse"}) {
    INFO(method);
    AmaxOptions opts;
    opts.method = method;
    const double want = whole.compute_amax(opts)->item<double>();
    REQUIRE(merged.compute_amax(opts)->item<double>() == want);
    REQUIRE(a.compute_amax(opts)->item<double>() != want);  // one rank alone sees other data
  }
  b.grow_to(b.histogram().numel() + 5);
  REQUIRE(b.histogram().numel() == n + 5);
  REQUIRE(b.histogram().narrow(0, n, 5).sum().item<int64_t>() == 0);
  CHECK_THROWS_AS(b.set_state(torch::zeros({4}), 1.0), c10::ValueError);
  CHECK_THROWS_AS(b.set_state(-torch::ones({4}, at::kLong), 1.0), c10::ValueError);
  CHECK_THROWS_AS(b.set_state(torch::ones({4}, at::kLong), 0.0), c10::ValueError);
}

TEST_CASE("numpy histogram path: range from the data minimum and growth by appended bins", "[calib]") {
  // np.histogram([1, 2, 3, 4], bins=3): edges 1, 2, 3, 4 (float32), the last bin closed.
  auto [h, e] = numpy_histogram_collect(torch::tensor({-1.0f, 2.0f, 3.0f, 4.0f}), at::Tensor(), at::Tensor(), 3, false);
  CHECK(e.scalar_type() == torch::kFloat);
  CHECK(torch::equal(e, torch::tensor({1.0f, 2.0f, 3.0f, 4.0f})));
  CHECK(torch::equal(h, torch::tensor({1, 1, 2}, torch::kLong)));
  // A later max of 6: np.arange(5, 7, 1) appended (float64 from then on); 0.5 is below the first
  // edge and dropped, as np.histogram drops it.
  auto [h2, e2] = numpy_histogram_collect(torch::tensor({0.5f, 6.0f, 4.5f}), h, e, 3, false);
  CHECK(e2.scalar_type() == torch::kDouble);
  CHECK(torch::equal(e2, torch::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, torch::kDouble)));
  CHECK(torch::equal(h2, torch::tensor({1, 1, 2, 1, 1}, torch::kLong)));
  // skip_zeros drops exact zeros; one value only: numpy widens the range by 0.5 on each side.
  auto [h3, e3] = numpy_histogram_collect(torch::tensor({0.0f, 2.0f}), at::Tensor(), at::Tensor(), 2, true);
  CHECK(torch::equal(e3, torch::tensor({1.5f, 2.0f, 2.5f})));
  CHECK(torch::equal(h3, torch::tensor({0, 1}, torch::kLong)));
  CHECK_THROWS_WITH(numpy_histogram_collect(torch::tensor({NAN}), at::Tensor(), at::Tensor(), 4, false),
                    Catch::Contains("NaN or Inf"));
  // mse over explicit edges: centres (e[j] + e[j+1]) / 2; a single non-empty bin is its own best amax.
  const std::vector<int64_t> counts = {0, 0, 0, 5};
  const std::vector<float> edges = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
  CHECK(amax_mse_edges(counts, edges, 8, false, 1, 1) == 4.5);
  CHECK_THROWS_WITH(amax_mse_edges(counts, {1.0f, 2.0f}, 8, false, 1, 1), Catch::Contains("bin edges"));
}
