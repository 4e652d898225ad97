// fake_quant from C++ against ATen's own fake-quant kernels, and its errors.
#include "catch_torch.h"
#include <torch/torch.h>

#include "reference.h"
#include "torchqat/ops.h"

using torchqat::fake_quant;

TEST_CASE("per-tensor fake_quant equals at::fake_quantize_per_tensor_affine bit for bit", "[ops]") {
  torch::manual_seed(0);
  auto x = torch::randn({7, 31, 5}) * 3;
  for (bool narrow : {false, true}) {
    auto y = fake_quant(x, torch::tensor(2.5f), 8, false, narrow);
    auto ref = at::fake_quantize_per_tensor_affine(x, 2.5f / 127.0f, 0, narrow ? -127 : -128, 127);
    REQUIRE(torch::equal(y, ref));
  }
}

TEST_CASE("per-channel fake_quant equals at::fake_quantize_per_channel_affine", "[ops]") {
  torch::manual_seed(1);
  auto x = torch::randn({6, 8, 5, 5});
  for (int64_t axis = 0; axis < 4; ++axis) {
    auto amax = torch::rand({x.size(axis)}) + 0.1;
    auto y = fake_quant(x, amax, 8, false, false, axis);
    auto ref = at::fake_quantize_per_channel_affine(x, amax / 127.0, torch::zeros({x.size(axis)}, torch::kInt), axis,
                                                    -128, 127);
    REQUIRE(torch::equal(y, ref));
    auto ycl = fake_quant(x.contiguous(at::MemoryFormat::ChannelsLast), amax, 8, false, false, axis);
    REQUIRE(torch::equal(ycl, ref));
  }
}

TEST_CASE("STE mask passes the clip range only, amax gets a gradient when it requires one", "[ops][autograd]") {
  // A batch of one sample of 5 elements.
  auto x = torch::tensor({-3.0f, -1.0f, 0.2f, 1.0f, 3.0f}).reshape({1, 5}).requires_grad_();
  auto amax = torch::tensor(1.0f).requires_grad_();
  fake_quant(x, amax).sum().backward();
  REQUIRE(torch::equal(x.grad(), torch::tensor({0.0f, 1.0f, 1.0f, 1.0f, 0.0f}).reshape({1, 5})));
  // The value: autograd of the written-out LSQ reference, in double, times LSQ's 1/sqrt(n * bound),
  // n = the 5 elements of the one sample.
  auto amax_ref = torch::tensor(1.0, torch::kDouble).requires_grad_();
  torchqat_test::lsq_fake_quant(x.detach().to(torch::kDouble), amax_ref).sum().backward();
  const double want = amax_ref.grad().item<double>() * torchqat_test::lsq_grad_scale(5);
  REQUIRE(want != 0.0);
  REQUIRE(amax.grad().item<float>() == Approx(want).epsilon(1e-5));
}

TEST_CASE("gradients of x and amax equal autograd of a plain reference, per tensor and per channel", "[ops][autograd]") {
  torch::manual_seed(3);
  const auto xd = torch::randn({6, 4, 5}, torch::kDouble) * 2;
  const auto g = torch::randn_like(xd);
  for (int64_t axis : {-1, 0, 2}) {
    for (auto [is_unsigned, narrow] : {std::pair{false, false}, std::pair{false, true}, std::pair{true, false}}) {
      INFO("axis " << axis << " unsigned " << is_unsigned << " narrow " << narrow);
      const auto x0 = is_unsigned ? xd.abs() : xd;
      int64_t k = 1;
      at::Tensor a0 = torch::rand({}, torch::kDouble) + 0.7;
      if (axis >= 0) {
        std::vector<int64_t> shape{1, 1, 1};
        shape[axis] = k = x0.size(axis);
        a0 = torch::rand(shape, torch::kDouble) + 0.7;  // broadcast-shaped: the axis is inferred
      }
      auto x = x0.to(torch::kFloat).requires_grad_();
      auto amax = a0.to(torch::kFloat).requires_grad_();
      fake_quant(x, amax, 8, is_unsigned, narrow).backward(g.to(torch::kFloat));

      auto xr = x0.clone().requires_grad_();
      auto ar = a0.clone().requires_grad_();
      torchqat_test::lsq_fake_quant(xr, ar, 8, is_unsigned, narrow).backward(g);
      // The STE mask |x| <= amax (pytorch-quantization's), not the reference's [qmin * step, amax].
      const auto inside = x0.abs() <= ar.detach();
      const auto gf = g.to(torch::kFloat);
      REQUIRE(torch::equal(x.grad(), torch::where(inside, gf, torch::zeros_like(gf))));
      // float32 kernel against a float64 reference: sums of 120 / k terms of size <= bound, so 1e-4
      // relative covers float32 rounding; a wrong LSQ scale (>= 1/sqrt(2) off) or sign is far outside.
      // n: one sample's elements per amax entry; dim 0 (6) is the batch unless amax runs along it.
      const int64_t n = axis == 0 ? x0.numel() / k : x0.numel() / k / x0.size(0);
      const auto want = ar.grad() * torchqat_test::lsq_grad_scale(n, 8, is_unsigned);
      REQUIRE(torch::allclose(amax.grad().to(torch::kDouble), want, 1e-4, 1e-6));
    }
  }
}

TEST_CASE("amax 0 and -0 quantize to zero in every dtype, forward and backward", "[ops]") {
  for (auto dt : {torch::kFloat, torch::kHalf, torch::kBFloat16, torch::kDouble}) {
    for (float z : {0.0f, -0.0f}) {  // -0 passes 'amax >= 0', but 1/-0 is -inf (fuzzer-found)
      auto x = torch::tensor({0.0f, 1.5f, -2.0f, 1e-3f}).to(dt).requires_grad_();
      auto amax = torch::tensor(z).requires_grad_();
      auto y = fake_quant(x, amax, 11);
      REQUIRE(torch::equal(y.to(torch::kFloat).abs(), torch::zeros({4})));
      y.sum().backward();
      REQUIRE(torch::isfinite(x.grad().to(torch::kFloat)).all().item<bool>());
      REQUIRE(std::isfinite(amax.grad().item<float>()));
    }
  }
}

TEST_CASE("bad inputs raise errors that name the argument", "[ops][errors]") {
  auto x = torch::randn({2, 3});
  CHECK_THROWS_WITH(fake_quant(x, torch::tensor(-1.0f)), Catch::Contains("amax must be >= 0"));
  CHECK_THROWS_WITH(fake_quant(x, torch::tensor(NAN)), Catch::Contains("amax must be finite"));
  CHECK_THROWS_WITH(fake_quant(x, torch::tensor(1.0f), 1), Catch::Contains("num_bits must be in [2, 16], got 1"));
  CHECK_THROWS_WITH(fake_quant(x, torch::tensor(1.0f), 17), Catch::Contains("got 17"));
  CHECK_THROWS_WITH(fake_quant(x, torch::ones({3}), 8, false, false, 2), Catch::Contains("axis 2 is out of range"));
  CHECK_THROWS_WITH(fake_quant(x, torch::ones({5}), 8, false, false, 1), Catch::Contains("does not match x"));
  CHECK_THROWS_WITH(fake_quant(torch::arange(4), torch::tensor(1.0f)), Catch::Contains("x must be float32"));
}

TEST_CASE("quantize/dequantize round trip equals fake_quant", "[ops]") {
  auto x = torch::randn({4, 9});
  auto amax = torch::rand({4}) + 0.5;
  auto [q, scale] = torchqat::quantize(x, amax, 8, false, false, 0);
  REQUIRE(q.scalar_type() == torch::kChar);
  REQUIRE(torch::equal(torchqat::dequantize(q, scale, 0), fake_quant(x, amax, 8, false, false, 0)));

  SECTION("a bf16 or fp16 amax still gives the float32 step (fuzzer-found: 11 bits, bf16 amax 3.89)") {
    for (auto dt : {torch::kBFloat16, torch::kHalf}) {
      const auto a = torch::full({}, 3.890625, dt);
      const auto xs = torch::tensor({4.332e-4f, -2.0472e-3f, -5.593e-4f, 3.699e-4f});
      auto [q11, s11] = torchqat::quantize(xs, a, 11, false, false, std::nullopt);
      REQUIRE(s11.scalar_type() == torch::kFloat);
      REQUIRE(s11.item<float>() == 3.890625f / 1023.0f);
      REQUIRE(torch::equal(torchqat::dequantize(q11, s11, std::nullopt), fake_quant(xs, a, 11, false, false, std::nullopt)));
    }
  }
}
