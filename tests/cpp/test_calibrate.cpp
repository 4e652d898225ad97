// torchqat::calibrate: amax against plain-torch references (running abs-max per tensor and per
// channel, a histogram calibrator fed the layer's recorded inputs), num_batches, DataLoader
// batches, switches and training flags restored, progress line, and all-or-nothing errors.
#include "catch_torch.h"

#include <sstream>

#include "onnx_test_model.h"
#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calibrate.h"
#include "torchqat/ops.h"

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
                      Catch::Contains("method must be one of 'max', 'entropy', 'percentile', 'mse', 'auto', got 'kl'"));
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

TEST_CASE("calibrate auto keeps the candidate with the least layer output error, measured as defined", "[flow][calibrate][auto]") {
  // A first layer whose input is mostly one background value with a sparse bright foreground
  // (the demo's first conv): entropy clips the foreground, auto must not pick it.
  torch::manual_seed(3);
  torchqat::nn::QuantConv2d conv(torch::nn::Conv2dOptions(1, 4, 3).padding(1));
  torch::nn::Sequential model(conv);
  std::vector<at::Tensor> batches;
  for (int i = 0; i < 3; ++i) {
    auto x = torch::full({8, 1, 12, 12}, 0.8f);
    auto mask = torch::rand({8, 1, 12, 12}) < 0.15;
    x = torch::where(mask, torch::rand({8, 1, 12, 12}) * 2.0 + 0.5, x);
    batches.push_back(x);
  }
  CerrCapture cap;
  const auto choices = torchqat::calibrate(model, batches, CalibrateOptions().method("auto").auto_batches(2));
  REQUIRE(cap.text.str().find("per-quantizer choice") != std::string::npos);
  REQUIRE(choices.size() == 1);
  const auto& c = choices[0];
  REQUIRE(c.quantizer == "0._input_quantizer");
  REQUIRE(c.candidates.size() == 6);
  // Each candidate's error by the definition: the conv with the weight quantized (its max amax)
  // on the first two batches, input fake-quantized at the candidate vs not quantized.
  const auto w_amax = conv->weight_quantizer()->amax();
  REQUIRE(torch::equal(w_amax, conv->weight.abs().amax({1, 2, 3}, true)));
  torch::NoGradGuard no_grad;
  const auto wq = torchqat::fake_quant(conv->weight, w_amax, 8, false, false, 0);
  double best = 1e300;
  std::string best_label;
  float entropy_amax = 0;
  for (const auto& k : c.candidates) {
    double err = 0;
    for (int b = 0; b < 2; ++b) {
      const auto ref = torch::conv2d(batches[b], wq, conv->bias, 1, 1);
      const auto out = torch::conv2d(torchqat::fake_quant(batches[b], torch::tensor(k.amax)), wq, conv->bias, 1, 1);
      err += (out - ref).square().mean().item<double>();
    }
    INFO(k.method);
    REQUIRE(k.error == Approx(err).epsilon(1e-12));
    if (err < best) best = err, best_label = k.method;
    if (k.method == "entropy") entropy_amax = k.amax;
  }
  REQUIRE(c.method == best_label);
  REQUIRE(c.method != "entropy");
  REQUIRE(c.amax > entropy_amax);  // entropy clips the foreground here
  REQUIRE(conv->input_quantizer()->amax().item<float>() == c.amax);
  REQUIRE(std::dynamic_pointer_cast<torchqat::calib::HistogramCalibrator>(conv->input_quantizer()->calibrator()));
  REQUIRE(torchqat::auto_report(choices).find("0._input_quantizer") != std::string::npos);
}
