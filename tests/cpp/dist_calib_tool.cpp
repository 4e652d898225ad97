// torchqat::calibrate across processes, for tests/python/test_cpp_dist_calib.py:
//   torchqat_dist_calib_tool OUT RANK WORLD STORE [MODEL]
// builds a small quantized model (fixed seed), calibrates it with methods max and percentile on
// the fixed batches RANK, RANK + WORLD, ... through a gloo group of WORLD processes sharing the
// FileStore STORE (WORLD 1: one process on every batch, no group), and writes each quantizer's amax
// to OUT, one line per method and quantizer. MODEL "extra" gives this rank one more layer (ranks
// then disagree): the error message goes to OUT and the exit status is 3.
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "torchqat/calibrate.h"
#include "torchqat/nn/quant_linear.h"
#include "torchqat/quantizers.h"

namespace {

torch::nn::Sequential make_model(bool extra) {
  torch::manual_seed(0);
  torch::nn::Sequential m(torchqat::nn::QuantLinear(torch::nn::LinearOptions(16, 8)), torch::nn::ReLU(),
                          torchqat::nn::QuantLinear(torch::nn::LinearOptions(8, 4)));
  if (extra) m->push_back(torchqat::nn::QuantLinear(torch::nn::LinearOptions(4, 4)));
  return m;
}

// The first batch is the largest: its max fixes the histogram width of one process, and (being
// the largest on every rank's first batch) the width the ranks agree on.
std::vector<at::Tensor> all_batches() {
  torch::manual_seed(1);
  std::vector<at::Tensor> b;
  for (int i = 0; i < 6; ++i) b.push_back(torch::randn({32, 16}) * (i == 0 ? 4.0 : 1.0));
  return b;
}

c10::intrusive_ptr<c10d::ProcessGroup> make_group(int rank, int world, const std::string& store_path) {
  auto store = c10::make_intrusive<c10d::FileStore>(store_path, world);
  auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(30));
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
  group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, backend);
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  return group;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: torchqat_dist_calib_tool OUT RANK WORLD STORE [extra]\n";
    return 2;
  }
  const std::string out_path = argv[1];
  const int rank = std::stoi(argv[2]);
  const int world = std::stoi(argv[3]);
  const bool extra = argc > 5 && std::string(argv[5]) == "extra";
  std::ofstream out(out_path);
  auto group = world > 1 ? make_group(rank, world, argv[4]) : c10::intrusive_ptr<c10d::ProcessGroup>();
  const auto batches = all_batches();
  std::vector<at::Tensor> mine;
  for (size_t i = rank; i < batches.size(); i += world) mine.push_back(batches[i]);
  try {
    for (const char* method : {"max", "percentile"}) {
      auto model = make_model(extra);
      torchqat::calibrate(model, mine,
                          torchqat::CalibrateOptions().method(method).progress(false).process_group(group));
      for (const auto& e : torchqat::quantizers(*model)) {
        out << method << " " << e.name;
        const at::Tensor a = e.quantizer->amax().flatten().to(at::kDouble);
        for (int64_t i = 0; i < a.numel(); ++i) {
          char buf[32];
          std::snprintf(buf, sizeof(buf), " %.9g", a[i].item<double>());
          out << buf;
        }
        out << "\n";
      }
    }
  } catch (const c10::ValueError& e) {
    out << "ValueError: " << e.what_without_backtrace() << "\n";
    return 3;
  }
  return 0;
}
