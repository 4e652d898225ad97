// The quantization rules (include/torchqat/quant_rules.h) against their definitions.
#include "catch_torch.h"
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "torchqat/quant_rules.h"

using namespace torchqat;

TEST_CASE("quant_bound and quant_min: 2^(b-1)-1 signed, 2^b-1 unsigned, min -bound-1, -bound narrow, 0 unsigned",
          "[rules]") {
  for (int64_t b = kMinNumBits; b <= kMaxNumBits; ++b) {
    INFO("num_bits " << b);
    const int64_t s = static_cast<int64_t>(std::pow(2.0, static_cast<double>(b - 1))) - 1;
    const int64_t u = static_cast<int64_t>(std::pow(2.0, static_cast<double>(b))) - 1;
    REQUIRE(quant_bound(b, false) == s);
    REQUIRE(quant_bound(b, true) == u);
    REQUIRE(quant_min(b, false, false) == -s - 1);
    REQUIRE(quant_min(b, false, true) == -s);
    REQUIRE(quant_min(b, true, false) == 0);
    REQUIRE(quant_min(b, true, true) == 0);
  }
  REQUIRE(quant_bound(8, false) == 127);
  REQUIRE(quant_bound(8, true) == 255);
  REQUIRE(quant_bound(4, false) == 7);
}

TEST_CASE("check_num_bits: [2, 16], the caller's name first", "[rules][errors]") {
  REQUIRE_NOTHROW(check_num_bits("f", 2));
  REQUIRE_NOTHROW(check_num_bits("f", 16));
  REQUIRE_THROWS_AS(check_num_bits("f", 1), c10::ValueError);
  REQUIRE_THROWS_WITH(check_num_bits("MaxCalibrator", 17),
                      Catch::StartsWith("MaxCalibrator: num_bits must be in [2, 16], got 17"));
  REQUIRE_THROWS_WITH(quant_bound(0, false), Catch::Contains("num_bits must be in [2, 16], got 0"));
}

TEST_CASE("check_amax: finite and >= 0, NaN / Inf / the minimum named", "[rules][errors]") {
  REQUIRE_NOTHROW(check_amax("f", torch::tensor({0.0f, -0.0f, 3.0f})));
  REQUIRE_NOTHROW(check_amax("f", torch::empty({0})));
  REQUIRE_THROWS_AS(check_amax("f", torch::tensor(-1.0f)), c10::ValueError);
  REQUIRE_THROWS_WITH(check_amax("op", torch::tensor({1.0f, -2.0f, -1.0f})),
                      Catch::StartsWith("op: amax must be >= 0, got -2"));
  REQUIRE_THROWS_WITH(check_amax("op", torch::tensor({1.0f, NAN})),
                      Catch::StartsWith("op: amax must be finite, got NaN (amax shape [2])"));
  REQUIRE_THROWS_WITH(check_amax("op", torch::full({2, 1}, INFINITY)),
                      Catch::StartsWith("op: amax must be finite, got Inf (amax shape [2, 1])"));
  REQUIRE_THROWS_WITH(check_amax("op", torch::tensor(-1.0, torch::kDouble)), Catch::Contains("got -1"));
}

TEST_CASE("amax_axes: the dims of a broadcast-shaped amax that are not 1", "[rules]") {
  const auto axes = [](std::vector<int64_t> s) { return amax_axes(c10::fromIntArrayRefSlow(s)); };
  REQUIRE(axes({}).empty());
  REQUIRE(axes({1, 1, 1, 1}).empty());
  REQUIRE(axes({4, 1, 1, 1}) == std::vector<int64_t>{0});
  REQUIRE(axes({1, 8, 1, 1}) == std::vector<int64_t>{1});
  REQUIRE(axes({4, 8, 1, 1}) == std::vector<int64_t>{0, 1});
  REQUIRE(axes({5}) == std::vector<int64_t>{0});
}

TEST_CASE("qdq_scale: amax / bound in float32, below the smallest normal float32 the zero scale", "[rules]") {
  const float tiny = std::numeric_limits<float>::min();  // amax / 127 of it is subnormal
  const auto amax = torch::tensor({2.54f, 0.0f, tiny, 1.0f}, torch::kDouble);
  const auto s = qdq_scale(amax, 127.0, 0.5f);
  REQUIRE(s.scalar_type() == torch::kFloat);
  REQUIRE(s.device().is_cpu());
  REQUIRE(s[0].item<float>() == 2.54f / 127.0f);
  REQUIRE(s[1].item<float>() == 0.5f);
  REQUIRE(s[2].item<float>() == 0.5f);
  REQUIRE(s[3].item<float>() == 1.0f / 127.0f);
  REQUIRE(qdq_scale(torch::tensor(448.0f), 448.0, 0.5f).item<float>() == 1.0f);
}

TEST_CASE("lsq_sample_count: one sample's elements per amax entry, dim 0 the batch unless amax runs along it",
          "[rules]") {
  // Activation [B, C, H, W] = [8, 3, 4, 5]: per tensor C*H*W, per channel (axis 1) H*W.
  REQUIRE(lsq_sample_count({8, 3, 4, 5}, 1, false) == 3 * 4 * 5);
  REQUIRE(lsq_sample_count({8, 3, 4, 5}, 3, false) == 4 * 5);
  // Independent of the batch: the same count from a shard of the batch.
  REQUIRE(lsq_sample_count({2, 3, 4, 5}, 3, false) == lsq_sample_count({8, 3, 4, 5}, 3, false));
  // Conv weight [K, C, kh, kw] per output channel (axis 0): dim 0 is the channel, C*kh*kw each.
  REQUIRE(lsq_sample_count({16, 3, 3, 3}, 16, true) == 3 * 3 * 3);
  // A multi-axis amax [1, 3, 4, 1] over x [8, 3, 4, 5]: 5 elements per entry per sample.
  REQUIRE(lsq_sample_count({8, 3, 4, 5}, 12, false) == 5);
  // At least 1: empty, 0-d and one-element-per-sample x.
  REQUIRE(lsq_sample_count({0, 3}, 1, false) == 1);
  REQUIRE(lsq_sample_count({}, 1, false) == 1);
  REQUIRE(lsq_sample_count({7}, 1, false) == 1);
  REQUIRE(lsq_amax_grad_scale(20, 127.0) == Approx(1.0 / (std::sqrt(20.0 * 127.0) * 127.0)).epsilon(1e-15));
}
