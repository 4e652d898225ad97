// Every CUDA kernel launched through the C++ API (fake_quant, its backward, abs_max,
// histogram_abs) and compared with the CPU kernels bit for bit. Without a GPU or without the
// CUDA kernels compiled in, each test prints kSkip and returns; ctest counts it as skipped
// (SKIP_REGULAR_EXPRESSION in CMakeLists.txt), since Catch2 2 has no skip of its own.
#include "catch_torch.h"
#include <torch/cuda.h>
#include <torch/torch.h>

#include "torchqat/build_info.h"
#include "torchqat/calib/stats.h"
#include "torchqat/ops.h"

namespace {

constexpr const char* kSkip = "TORCHQAT_SKIP: needs a CUDA GPU and a build with the CUDA kernels";

bool cuda_ready() { return torchqat::cuda_compiled() && torch::cuda::is_available(); }

#define TORCHQAT_REQUIRE_CUDA() \
  do {                          \
    if (!cuda_ready()) {        \
      WARN(kSkip);              \
      return;                   \
    }                           \
  } while (0)

// x's values on the GPU with x's strides, `offset` elements into a larger allocation: a view
// with a storage offset, so offset 1 reaches the kernels' unaligned (one element) variants.
at::Tensor on_gpu(const at::Tensor& x, int64_t offset, int device = 0) {
  auto buf = torch::empty({x.numel() + offset}, x.options().device(torch::Device(torch::kCUDA, device)));
  auto v = buf.slice(0, offset).as_strided(x.sizes(), x.strides());
  v.copy_(x);
  REQUIRE(v.storage_offset() == offset);
  return v;
}

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kHalf, at::kBFloat16, at::kDouble};

struct Case {
  std::vector<int64_t> shape;
  std::optional<int64_t> axis;
  bool channels_last;
};

// Per tensor; per channel as whole rows, odd rows, channels-last; tails n % VEC != 0.
const std::vector<Case> kCases = {
    {{16, 32, 9, 7}, std::nullopt, false}, {{16, 32, 9, 7}, 0, false}, {{16, 32, 9, 7}, 1, false},
    {{16, 32, 9, 7}, 1, true},            {{8, 16, 8, 8}, 1, false},  {{8, 33, 5}, 2, false},
    {{100003}, std::nullopt, false},      {{5, 3}, 1, false}};

}  // namespace

TEST_CASE("CUDA fake_quant and its backward equal the CPU bit for bit", "[cuda]") {
  TORCHQAT_REQUIRE_CUDA();
  torch::manual_seed(0);
  struct Range {
    int64_t bits;
    bool is_unsigned, narrow;
  };
  const std::vector<Range> ranges = {{8, false, false}, {4, false, false}, {8, true, false}, {8, false, true},
                                     {16, false, false}};
  for (const Case& c : kCases) {
    for (auto dt : kDtypes) {
      auto x = (torch::randn(c.shape, torch::kDouble) * 3).to(dt);
      auto g = torch::randn(c.shape, torch::kDouble).to(dt);  // float64 digits must survive
      if (c.channels_last) {
        x = x.contiguous(at::MemoryFormat::ChannelsLast);
        g = g.contiguous(at::MemoryFormat::ChannelsLast);
      }
      auto amax = c.axis ? torch::rand({c.shape[static_cast<size_t>(*c.axis)]}) * 3 : torch::tensor(2.0f);
      if (c.axis) amax[0] = 0.0f;
      for (const Range& r : ranges) {
        for (int64_t offset : {0, 1}) {
          INFO("shape " << x.sizes() << " dtype " << dt << " bits " << r.bits << " unsigned " << r.is_unsigned
                        << " narrow " << r.narrow << " offset " << offset);
          auto xg = on_gpu(x, offset), gg = on_gpu(g, offset), ag = amax.cuda();
          auto y = torchqat::fake_quant(xg, ag, r.bits, r.is_unsigned, r.narrow, c.axis);
          REQUIRE(y.is_cuda());
          REQUIRE(torch::equal(y.cpu(), torchqat::fake_quant(x, amax, r.bits, r.is_unsigned, r.narrow, c.axis)));
          for (bool amax_grad : {false, true}) {
            auto [gx, ga] = torchqat::fake_quant_backward(gg, xg, ag, r.bits, r.is_unsigned, r.narrow, c.axis,
                                                          amax_grad);
            auto [gx_cpu, ga_cpu] =
                torchqat::fake_quant_backward(g, x, amax, r.bits, r.is_unsigned, r.narrow, c.axis, amax_grad);
            REQUIRE(torch::equal(gx.cpu(), gx_cpu));
            REQUIRE(ga.defined() == amax_grad);
            if (amax_grad) REQUIRE(torch::allclose(ga.cpu(), ga_cpu, 1e-4, 1e-6));
          }
        }
      }
    }
  }
}

TEST_CASE("CUDA fake_quant autograd equals the CPU", "[cuda]") {
  TORCHQAT_REQUIRE_CUDA();
  torch::manual_seed(1);
  auto x = torch::randn({8, 16, 5, 5}).contiguous(at::MemoryFormat::ChannelsLast);
  auto amax = torch::rand({16}) + 0.5;
  auto xc = x.clone().requires_grad_(), ac = amax.clone().requires_grad_();
  auto xg = x.cuda().requires_grad_(), ag = amax.cuda().requires_grad_();
  torchqat::fake_quant(xc, ac, 8, false, false, 1).square().sum().backward();
  torchqat::fake_quant(xg, ag, 8, false, false, 1).square().sum().backward();
  REQUIRE(torch::allclose(xg.grad().cpu(), xc.grad(), 1e-6, 1e-6));
  REQUIRE(torch::allclose(ag.grad().cpu(), ac.grad(), 1e-4, 1e-6));
}

TEST_CASE("CUDA abs_max equals the CPU bit for bit", "[cuda]") {
  TORCHQAT_REQUIRE_CUDA();
  torch::manual_seed(2);
  struct R {
    std::vector<int64_t> shape, keep;
    bool channels_last;
  };
  const std::vector<R> cases = {{{100003}, {}, false},          {{64, 3, 3, 3}, {0}, false},
                                {{8, 64, 14, 14}, {1}, false},  {{8, 64, 14, 14}, {1}, true},
                                {{8, 64, 3, 3}, {1}, false},    {{4, 1000}, {1}, false},
                                {{3, 8, 33}, {0, 2}, false},    {{5, 4, 3}, {0, 1, 2}, false},
                                {{4, 300000}, {0}, false},      {{7, 4096}, {0}, false}};
  for (const R& c : cases) {
    for (auto dt : kDtypes) {
      auto x = (torch::randn(c.shape) * 3).to(dt);
      if (c.channels_last) x = x.contiguous(at::MemoryFormat::ChannelsLast);
      for (int64_t offset : {0, 1}) {
        INFO("shape " << x.sizes() << " dtype " << dt << " offset " << offset);
        REQUIRE(torch::equal(torchqat::abs_max(on_gpu(x, offset), c.keep).cpu(), torchqat::abs_max(x, c.keep)));
      }
    }
  }
  auto bad = torch::randn({1001}, torch::kCUDA);
  bad[77] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(torchqat::abs_max(bad), Catch::Contains("NaN"));
}

TEST_CASE("CUDA histogram_abs equals the CPU bit for bit", "[cuda]") {
  TORCHQAT_REQUIRE_CUDA();
  torch::manual_seed(3);
  for (auto dt : kDtypes) {
    auto x = (torch::randn({300007}) * 2).to(dt);
    x.slice(0, 0, c10::nullopt, 3).zero_();
    x[5] = std::numeric_limits<float>::quiet_NaN();
    x[100] = std::numeric_limits<float>::infinity();
    for (int64_t bins : {2048, 20000, 200000}) {  // shared-memory replicas, fewer, global bins
      for (bool skip_zeros : {false, true}) {
        for (int64_t offset : {0, 1}) {
          INFO("dtype " << dt << " bins " << bins << " skip_zeros " << skip_zeros << " offset " << offset);
          auto h = torch::zeros({bins}, torch::kLong), hg = h.cuda();
          torchqat::histogram_abs(x, h, 8.0 / static_cast<double>(bins), skip_zeros);
          torchqat::histogram_abs(on_gpu(x, offset), hg, 8.0 / static_cast<double>(bins), skip_zeros);
          REQUIRE(torch::equal(hg.cpu(), h));
        }
      }
    }
  }
}

TEST_CASE("CUDA kernels run on the tensors' device when it is not the current one", "[cuda]") {
  TORCHQAT_REQUIRE_CUDA();
  if (torch::cuda::device_count() < 2) {
    WARN("TORCHQAT_SKIP: needs two CUDA GPUs");
    return;
  }
  torch::manual_seed(4);
  auto x = torch::randn({8, 16, 5, 5});
  auto amax = torch::rand({16}) + 0.5;
  auto xg = on_gpu(x, 1, 1), ag = amax.to(torch::Device(torch::kCUDA, 1));
  auto y = torchqat::fake_quant(xg, ag, 8, false, false, 1);
  REQUIRE(y.device() == xg.device());
  REQUIRE(torch::equal(y.cpu(), torchqat::fake_quant(x, amax, 8, false, false, 1)));
  auto [gx, ga] = torchqat::fake_quant_backward(xg, xg, ag, 8, false, false, 1, false);
  REQUIRE(torch::equal(gx.cpu(), std::get<0>(torchqat::fake_quant_backward(x, x, amax, 8, false, false, 1, false))));
  REQUIRE(torch::equal(torchqat::abs_max(xg, {1}).cpu(), torchqat::abs_max(x, {1})));
  auto h = torch::zeros({512}, torch::kLong), hg = h.to(xg.device());
  torchqat::histogram_abs(x, h, 0.02, true);
  torchqat::histogram_abs(xg, hg, 0.02, true);
  REQUIRE(torch::equal(hg.cpu(), h));
}
