// torchqat::calibrate: amax against plain-torch references (running abs-max per tensor and per
// channel, a histogram calibrator fed the layer's recorded inputs), num_batches, DataLoader
// batches, switches and training flags restored, progress line, and all-or-nothing errors.
#include "catch_torch.h"

#include <sstream>

#include "onnx_test_model.h"
#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calibrate.h"

using torchqat::CalibrateOptions;

namespace {

std::vector<at::Tensor> make_batches(int n) {
  std::vector<at::Tensor> b;
  for (int i = 0; i < n; ++i) b.push_back(torch::randn({4, 3, 8, 8}) * (1.0 + i));
  return b;
}

torchqat_test::TinyResNet make_model() {
  torch::manual_seed(0);
  torchqat_test::TinyResNet model;
  torchqat_test::randomize_batch_norms(*model);
  return model;
}

CalibrateOptions quiet(const std::string& method = "max") { return CalibrateOptions().method(method).progress(false); }

// Redirects std::cerr for a scope.
struct CerrCapture {
  std::ostringstream text;
  std::streambuf* old;
  CerrCapture() : old(std::cerr.rdbuf(text.rdbuf())) {}
  ~CerrCapture() { std::cerr.rdbuf(old); }
};

}  // namespace

TEST_CASE("calibrate max gives the running abs-max of inputs and the per-channel max of weights", "[flow][calibrate]") {
  auto model = make_model();
  const auto batches = make_batches(3);
  model->train();
  torchqat::calibrate(model, batches, quiet("max").num_batches(2));
  // The first conv sees the data itself; only the first two batches count.
  const auto in_amax = torch::max(batches[0].abs().max(), batches[1].abs().max());
  auto stem = model->stem[0]->as<torchqat::nn::QuantConv2dImpl>();
  REQUIRE(torch::equal(stem->input_quantizer()->amax(), in_amax));
  REQUIRE(stem->weight_quantizer()->amax().sizes() == at::IntArrayRef({8, 1, 1, 1}));
  REQUIRE(torch::equal(stem->weight_quantizer()->amax(), stem->weight.abs().amax({1, 2, 3}, true)));
  REQUIRE(torch::equal(model->fc->weight_quantizer()->amax(), model->fc->weight.abs().amax({1}, true)));
  // Quantizing again, training flags back, every quantizer has an amax.
  REQUIRE(model->is_training());
  REQUIRE(model->stem[1]->is_training());
  for (const auto& e : torchqat::quantizers(*model)) {
    INFO(e.name);
    REQUIRE((e.quantizer->quant_enabled() && !e.quantizer->calib_enabled() && e.quantizer->has_amax()));
  }
}

TEST_CASE("calibrate with a histogram method equals a histogram calibrator fed the same inputs", "[flow][calibrate]") {
  const auto batches = make_batches(3);
  for (const std::string method : {"entropy", "percentile", "mse"}) {
    INFO(method);
    auto model = make_model();
    torchqat::calibrate(model, batches, quiet(method).percentile(99.9));
    auto stem = model->stem[0]->as<torchqat::nn::QuantConv2dImpl>();
    REQUIRE(std::dynamic_pointer_cast<torchqat::calib::HistogramCalibrator>(stem->input_quantizer()->calibrator()));
    torchqat::calib::HistogramCalibrator reference;
    for (const auto& b : batches) reference.collect(b);
    torchqat::calib::AmaxOptions o;
    o.method = method;
    o.percentile = 99.9;
    REQUIRE(torch::equal(stem->input_quantizer()->amax(), *reference.compute_amax(o)));
    // Weights are per channel: max, whatever the method.
    REQUIRE(torch::equal(stem->weight_quantizer()->amax(), stem->weight.abs().amax({1, 2, 3}, true)));
  }
}

TEST_CASE("calibrate takes a torch::data DataLoader and a custom forward", "[flow][calibrate]") {
  const auto batches = make_batches(2);
  auto data = torch::data::datasets::TensorDataset(torch::cat(batches)).map(torch::data::transforms::Stack<torch::data::TensorExample>());
  auto loader = torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      std::move(data), torch::data::DataLoaderOptions().batch_size(4));
  auto from_loader = make_model();
  torchqat::calibrate(from_loader, loader, quiet("entropy"));
  auto from_vector = make_model();
  torchqat::calibrate(from_vector, batches, quiet("entropy"));
  // A custom forward on the raw module, with unstacked Examples from a loader without Stack.
  auto custom = make_model();
  auto raw = torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      torch::data::datasets::TensorDataset(torch::cat(batches)), torch::data::DataLoaderOptions().batch_size(4));
  int calls = 0;
  torchqat::calibrate(*custom, *raw, quiet("entropy"), [&](const std::vector<torch::data::TensorExample>& b) {
    ++calls;
    custom->forward(torchqat::detail::batch_input(b));
  });
  REQUIRE(calls == 2);
  const auto a = torchqat::quantizers(*from_loader), b = torchqat::quantizers(*from_vector),
             c = torchqat::quantizers(*custom);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    REQUIRE(torch::equal(a[i].quantizer->amax(), b[i].quantizer->amax()));
    REQUIRE(torch::equal(c[i].quantizer->amax(), b[i].quantizer->amax()));
  }
}

TEST_CASE("calibrate prints a progress line on stderr unless disabled", "[flow][calibrate]") {
  const auto batches = make_batches(3);
  auto model = make_model();
  {
    CerrCapture cap;
    torchqat::calibrate(model, batches, CalibrateOptions().num_batches(2));
    const std::string out = cap.text.str();
    INFO(out);
    REQUIRE(out.find("calibrating: 1/2 batches") != std::string::npos);
    REQUIRE(out.find("calibrating: 2/2 batches") != std::string::npos);
    REQUIRE(out.find("10 quantizers (max)\n") != std::string::npos);
  }
  CerrCapture cap;
  torchqat::calibrate(model, batches, quiet());
  REQUIRE(cap.text.str().empty());
}

TEST_CASE("calibrate errors change nothing and name the option or quantizer", "[flow][calibrate]") {
  auto model = make_model();
  const auto batches = make_batches(1);
  torchqat::calibrate(model, batches, quiet());
  std::vector<at::Tensor> before;
  for (const auto& e : torchqat::quantizers(*model)) before.push_back(e.quantizer->amax().clone());
  auto unchanged = [&] {
    const auto qs = torchqat::quantizers(*model);
    for (size_t i = 0; i < qs.size(); ++i) {
      INFO(qs[i].name);
      REQUIRE(torch::equal(qs[i].quantizer->amax(), before[i]));
      REQUIRE((qs[i].quantizer->quant_enabled() && !qs[i].quantizer->calib_enabled()));
    }
  };
  REQUIRE_THROWS_WITH(torchqat::calibrate(model, batches, quiet("kl")),
                      Catch::Contains("method must be one of 'max', 'entropy', 'percentile', 'mse', got 'kl'"));
  unchanged();
  // No batch: strict names the first quantizer and sets no amax.
  REQUIRE_THROWS_WITH(torchqat::calibrate(model, std::vector<at::Tensor>{}, quiet("entropy")),
                      Catch::Contains("quantizer 'stem.0._input_quantizer' saw no data"));
  unchanged();
  // forward throws mid-way (NaN data): the switches are restored.
  std::vector<at::Tensor> bad = {batches[0], torch::full({4, 3, 8, 8}, std::nanf(""))};
  REQUIRE_THROWS_WITH(torchqat::calibrate(model, bad, quiet()), Catch::Contains("x contains NaN"));
  unchanged();
}
