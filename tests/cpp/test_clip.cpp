// torchqat::clip from C++: forward and the PACT backward by value, broadcasting bounds, and the
// gradients against autograd of a plain reference (torch::where on the masks).
#include "catch_torch.h"
#include <torch/torch.h>

#include "torchqat/ops.h"

namespace {

// Clip through torch::where: autograd sends the gradient to lo where x <= lo, to hi where
// x >= hi and to x elsewhere, summed to each bound's shape (valid while lo < hi).
at::Tensor reference(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi) {
  return torch::where(x <= lo, lo, torch::where(x >= hi, hi, x));
}

}  // namespace

TEST_CASE("clip forward and PACT backward by value, scalar bounds", "[ops][clip]") {
  auto x = torch::tensor({-3.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.5f, 2.0f, 4.0f}).requires_grad_();
  auto lo = torch::tensor(-1.0f).requires_grad_();
  auto hi = torch::tensor(1.5f).requires_grad_();
  auto y = torchqat::clip(x, lo, hi);
  REQUIRE(torch::equal(y, torch::tensor({-1.0f, -1.0f, -0.5f, 0.0f, 0.5f, 1.5f, 1.5f, 1.5f})));
  y.backward(torch::arange(1.0f, 9.0f));
  REQUIRE(torch::equal(x.grad(), torch::tensor({0.0f, 0.0f, 3.0f, 4.0f, 5.0f, 0.0f, 0.0f, 0.0f})));
  REQUIRE(lo.grad().item<float>() == 3.0f);           // x <= min: elements 1 and 2
  REQUIRE(hi.grad().item<float>() == 6.0f + 7.0f + 8.0f);  // x >= max
  REQUIRE(lo.grad().dim() == 0);
}

TEST_CASE("clip with broadcasting bounds matches autograd of the reference", "[ops][clip]") {
  torch::manual_seed(3);
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto x0 = torch::randn({4, 5, 3}, opts) * 2;
  auto lo0 = -torch::rand({5, 1}, opts) - 0.2;
  auto hi0 = torch::rand({4, 1, 3}, opts) + 0.2;
  auto g = torch::randn({4, 5, 3}, opts);
  auto run = [&](bool ours) {
    auto x = x0.clone().requires_grad_();
    auto lo = lo0.clone().requires_grad_();
    auto hi = hi0.clone().requires_grad_();
    auto y = ours ? torchqat::clip(x, lo, hi) : reference(x, lo, hi);
    y.backward(g);
    return std::vector<at::Tensor>{y.detach(), x.grad(), lo.grad(), hi.grad()};
  };
  auto got = run(true);
  auto want = run(false);
  for (size_t i = 0; i < got.size(); ++i) {
    REQUIRE(got[i].sizes() == want[i].sizes());
    REQUIRE(torch::allclose(got[i], want[i], /*rtol=*/0, /*atol=*/1e-12));
  }
}

TEST_CASE("clip_backward computes only the bound gradients asked for", "[ops][clip]") {
  auto x = torch::tensor({-2.0f, 0.0f, 2.0f});
  auto g = torch::tensor({1.0f, 2.0f, 4.0f});
  auto [gx, gmin, gmax] = torchqat::clip_backward(g, x, torch::tensor(-1.0f), torch::tensor(1.0f), false, true);
  REQUIRE(torch::equal(gx, torch::tensor({0.0f, 2.0f, 0.0f})));
  REQUIRE_FALSE(gmin.defined());
  REQUIRE(gmax.item<float>() == 4.0f);
}

TEST_CASE("clip keeps the input dtype and layout, min wins where the bounds cross", "[ops][clip]") {
  auto x = torch::randn({2, 3, 4, 5}).contiguous(at::MemoryFormat::ChannelsLast).to(torch::kHalf);
  auto lo = -torch::rand({1, 3, 1, 1});
  auto hi = torch::rand({1, 3, 1, 1});
  auto y = torchqat::clip(x, lo, hi);
  REQUIRE(y.scalar_type() == torch::kHalf);
  REQUIRE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
  REQUIRE(torch::equal(y, torch::maximum(torch::minimum(x, hi.to(torch::kHalf)), lo.to(torch::kHalf))));
  auto crossed = torchqat::clip(torch::tensor({0.0f, 5.0f}), torch::tensor(2.0f), torch::tensor(1.0f));
  REQUIRE(torch::equal(crossed, torch::tensor({2.0f, 2.0f})));
}

TEST_CASE("clip refuses bounds that do not broadcast to x", "[ops][clip]") {
  REQUIRE_THROWS_AS(torchqat::clip(torch::randn({4, 5}), torch::zeros({3}), torch::ones({})), c10::ValueError);
  REQUIRE_THROWS_AS(torchqat::clip(torch::ones({3}, torch::kInt), torch::zeros({}), torch::ones({})),
                    c10::TypeError);
}
