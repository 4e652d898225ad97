// torchqat::calibrate with a process_group: two ranks (threads, thread_group.h) calibrating on half
// the batches each load the amax one process loads on all of them.
// The c10d headers first: catch_torch.h must come after every torch header (c10's CHECK).
#include "thread_group.h"
#include "torchqat/calib/distributed.h"
#include "torchqat/calibrate.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/quantizers.h"
#include "catch_torch.h"

namespace {

torch::nn::Sequential dist_model() {
  torch::manual_seed(0);
  return torch::nn::Sequential(torchqat::nn::QuantLinear(torch::nn::LinearOptions(16, 8)), torch::nn::ReLU(),
                               torchqat::nn::QuantLinear(torch::nn::LinearOptions(8, 4)));
}

// The first batch is the largest, so its max is both one process's histogram width and the
// max over the ranks' first batches.
std::vector<at::Tensor> dist_batches() {
  torch::manual_seed(1);
  std::vector<at::Tensor> b;
  for (int i = 0; i < 6; ++i) b.push_back(torch::randn({32, 16}) * (i == 0 ? 4.0 : 1.0));
  return b;
}

std::vector<at::Tensor> amaxes(torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (const auto& e : torchqat::quantizers(m)) out.push_back(e.quantizer->amax().clone());
  return out;
}

}  // namespace

TEST_CASE("calibrate with a process group of two ranks loads the one-process amax", "[calibrate][distributed]") {
  for (const char* method : {"max", "percentile", "mse"}) {
    auto single = dist_model();
    torchqat::calibrate(single, dist_batches(), torchqat::CalibrateOptions().method(method).progress(false));
    const auto expected = amaxes(*single);
    std::vector<std::vector<at::Tensor>> got(2), alone(2);
    // Models and batches are made here: seeding torch's one generator from two threads would race.
    std::vector<torch::nn::Sequential> models{dist_model(), dist_model()}, own{dist_model(), dist_model()};
    const auto all = dist_batches();
    torchqat_test::run_ranks(2, [&](int rank, c10::intrusive_ptr<c10d::ProcessGroup> group) {
      std::vector<at::Tensor> mine;
      for (size_t i = rank; i < all.size(); i += 2) mine.push_back(all[i]);
      torchqat::calibrate(models[rank], mine,
                          torchqat::CalibrateOptions().method(method).progress(false).process_group(group));
      got[rank] = amaxes(*models[rank]);
      // Without the group: this rank's half only.
      torchqat::calibrate(own[rank], mine, torchqat::CalibrateOptions().method(method).progress(false));
      alone[rank] = amaxes(*own[rank]);
    });
    INFO(method);
    REQUIRE(got[0].size() == expected.size());
    bool merge_mattered = false;
    for (size_t i = 0; i < expected.size(); ++i) {
      CHECK(torch::equal(got[0][i], expected[i]));
      CHECK(torch::equal(got[1][i], expected[i]));
      merge_mattered = merge_mattered || !torch::equal(alone[1][i], expected[i]);
    }
    CHECK(merge_mattered);  // rank 1's half alone gives other amax
  }
}

TEST_CASE("calibrate refuses ranks whose models differ, on every rank", "[calibrate][distributed]") {
  int refused = 0;
  std::mutex m;
  std::vector<torch::nn::Sequential> models{dist_model(), dist_model()};
  models[1]->push_back(torchqat::nn::QuantLinear(torch::nn::LinearOptions(4, 4)));
  const auto batches = dist_batches();
  torchqat_test::run_ranks(2, [&](int rank, c10::intrusive_ptr<c10d::ProcessGroup> group) {
    auto& model = models[rank];
    try {
      torchqat::calibrate(model, batches, torchqat::CalibrateOptions().progress(false).process_group(group));
    } catch (const c10::ValueError& e) {
      if (std::string(e.what()).find("ranks disagree on the number of quantizers") != std::string::npos) {
        std::lock_guard<std::mutex> lock(m);
        ++refused;
      }
    }
  });
  CHECK(refused == 2);
}

TEST_CASE("rebin_counts moves each bin's count by its left edge onto the wider bins", "[calib][distributed]") {
  // Edges 0, 1, 2, 3, 4 onto bins of width 2.5: the first three land in bin 0, the last two in bin 1.
  const at::Tensor got = torchqat::calib::rebin_counts(torch::tensor({1, 2, 3, 4, 5}, at::kLong), 1.0, 2.5);
  REQUIRE(torch::equal(got, torch::tensor({6, 9}, at::kLong)));
  REQUIRE_THROWS_AS(torchqat::calib::rebin_counts(torch::tensor({1}, at::kLong), 2.0, 1.0), c10::ValueError);
}
