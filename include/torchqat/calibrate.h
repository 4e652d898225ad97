#pragma once
// Model-level post-training calibration in one call, the C++ counterpart of torchqat.calibrate:
//
//   torchqat::calibrate(model, batches, torchqat::CalibrateOptions().method("mse").num_batches(16));
//   torchqat::calibrate(model, *data_loader);                 // a torch::data DataLoader
//   torchqat::calibrate(*net, batches, options, [&](const at::Tensor& x) { net->forward(x, mask); });
//
// Every enabled quantizer under the model gets a fresh calibrator (calib::uses_histogram: a
// histogram for per-tensor quantizers when the method searches one, a running max for per-channel
// ones, i.e. weights by default, and for method "max"), collects over the batches with
// quantization off (eval mode, no grad), then loads its amax: histograms by the method's search,
// max calibrators their running max. Each quantizer's quant / calib switches and every module's
// training flag are restored afterwards, also when forward throws. The amax equal Python's
// torchqat.calibrate on the same model and data.
//
// Distributed (process_group of size > 1): every rank calls calibrate on its own shard of the data;
// after collecting, the statistics are merged across ranks (torchqat/calib/distributed.h, Python's
// rule: running max all-reduced with MAX, histograms binned with one width and their counts summed)
// before any amax is computed, so every rank loads the same amax: exactly one process's on all the
// data for method "max", and for the histogram methods whenever the first batches' max over ranks
// is the width one process would fix. Ranks must collect in step (the same number of batches)
// until each histogram has a range. Method "auto" is refused there.
//
// batches: any range of batches (a std::vector<at::Tensor>, a DataLoader or *unique_ptr to one);
// a batch is a tensor, a torch::data::Example (its data), a std::vector of Examples (their data
// stacked, what a DataLoader without Stack gives) or a pair / tuple (its first element).
#include <ATen/core/grad_mode.h>
#include <torch/arg.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/data/example.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "torchqat/quantizers.h"

namespace torchqat {

struct CalibrateOptions {
  // "max" | "entropy" | "percentile" | "mse" | "auto" (below).
  TORCH_ARG(std::string, method) = "max";
  // Stop after that many batches (std::nullopt: all of them); >= 1.
  TORCH_ARG(std::optional<int64_t>, num_batches) = std::nullopt;
  // For method "percentile", in (0, 100].
  TORCH_ARG(double, percentile) = 99.99;
  // The entropy / mse searches' first candidate bin and step.
  TORCH_ARG(int64_t, start_bin) = 128;
  TORCH_ARG(int64_t, stride) = 1;
  // A quantizer that saw no data is an error, raised before any amax is set (false: a warning,
  // and that quantizer keeps the amax it had).
  TORCH_ARG(bool, strict) = true;
  // A progress line on stderr: batches done (of the total when known) and seconds elapsed; with
  // method "auto", the table of choices too.
  TORCH_ARG(bool, progress) = true;
  // Method "auto" measures on the inputs recorded during the first auto_batches batches; >= 1.
  TORCH_ARG(int64_t, auto_batches) = 2;
  // Merge statistics across the ranks of this c10d group (null, or a group of size 1: none); see above.
  TORCH_ARG(c10::intrusive_ptr<c10d::ProcessGroup>, process_group) = {};
};

// Method "auto" (python/torchqat/calib/auto.py's rule, the same in both languages): for each
// enabled per-tensor quantizer, the candidates are the amax its one histogram gives by mse, max
// (percentile 100), percentile 99.999, 99.99, 99.9 and entropy; each candidate's error is the sum,
// over the layers holding the quantizer and their recorded calls (the first auto_batches batches,
// up to 4 calls per batch), of mean((layer output with the quantizer at that amax - output with it
// disabled)^2), with every other activation quantizer disabled and the weights quantized with
// their calibrated amax. The least error wins (ties: the order above). Layers C++ can rerun:
// quantized convs, transposed convs, linears and poolings (their input), QuantAdd (pairs of
// inputs) and QuantConcat (a batch's inputs as one call: a concat run once per forward); a
// quantizer held only by other modules gets the first candidate. Weights keep their running max.
struct AutoChoice {
  struct Candidate {
    std::string method;
    float amax;
    double error;
  };
  std::string quantizer;
  std::string method;  // the candidate kept
  float amax;
  std::vector<Candidate> candidates;
};
// The choices as a table (quantizer, kept, amax, each candidate's error), as Python's AutoReport prints.
std::string auto_report(const std::vector<AutoChoice>& choices);

// The steps calibrate() runs around the caller's loop; usable directly for a custom loop:
//   torchqat::Calibration c(*model, options);
//   for (auto& b : data) { model->forward(b); c.step(); if (c.done()) break; }
//   c.finish();
class Calibration {
 public:
  // Validates options (c10::ValueError naming the option) and the model (no enabled quantizer is
  // an error) before changing anything, then puts every enabled quantizer in calib mode with a
  // fresh calibrator and the model in eval mode. total: the batch count for the progress line.
  Calibration(torch::nn::Module& module, CalibrateOptions options, std::optional<int64_t> total = std::nullopt);
  // Restores switches and training flags if finish() did not run (the amax are left as they were).
  ~Calibration();
  Calibration(const Calibration&) = delete;
  Calibration& operator=(const Calibration&) = delete;

  // True once num_batches batches were run.
  bool done() const;
  // One batch was run: counts it and updates the progress line.
  void step();
  int64_t batches() const { return batches_; }
  // Restores the switches and training flags, then loads every amax (all computed and checked
  // first, so an error sets none; with "auto", the weights' first, then each activation's as it is
  // chosen). The error names the quantizer.
  void finish();
  // Method "auto": what finish() chose per quantizer (empty for other methods).
  const std::vector<AutoChoice>& auto_choices() const { return auto_choices_; }

 private:
  void restore();
  void print_progress(bool last) const;

  at::NoGradGuard no_grad_;  // statistics only: no graph is built during the loop
  torch::nn::Module& module_;
  CalibrateOptions options_;
  std::optional<int64_t> total_;
  std::vector<QuantizerEntry> quantizers_;
  std::optional<QuantStateGuard> switches_;
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> training_;
  int64_t batches_ = 0;
  std::shared_ptr<int64_t> batch_index_ = std::make_shared<int64_t>(0);  // read by auto's recorders
  std::vector<AutoChoice> auto_choices_;
  bool restored_ = false;
  std::chrono::steady_clock::time_point start_;
};

namespace detail {

inline at::Tensor batch_input(const at::Tensor& t) { return t; }
template <typename Data, typename Target>
at::Tensor batch_input(const torch::data::Example<Data, Target>& e) {
  return batch_input(e.data);
}
template <typename Data, typename Target>
at::Tensor batch_input(const std::vector<torch::data::Example<Data, Target>>& examples) {
  std::vector<at::Tensor> data;
  data.reserve(examples.size());
  for (const auto& e : examples) data.push_back(batch_input(e.data));
  return at::stack(data);
}
template <typename A, typename B>
at::Tensor batch_input(const std::pair<A, B>& p) {
  return batch_input(p.first);
}
template <typename... T>
at::Tensor batch_input(const std::tuple<T...>& t) {
  return batch_input(std::get<0>(t));
}

// A DataLoader is handed around as a std::unique_ptr; iterate what it points to.
template <typename T>
T& as_range(T& r) {
  return r;
}
template <typename T, typename D>
T& as_range(std::unique_ptr<T, D>& p) {
  return *p;
}
template <typename T, typename D>
T& as_range(const std::unique_ptr<T, D>& p) {
  return *p;
}

template <typename R, typename = void>
struct has_size : std::false_type {};
template <typename R>
struct has_size<R, std::void_t<decltype(std::size(std::declval<R&>()))>> : std::true_type {};

}  // namespace detail

// Calibrates module on batches, running forward(batch) on each (batch as the range yields it).
// Returns method "auto"'s choices (empty for the other methods).
template <typename Batches, typename Forward>
std::vector<AutoChoice> calibrate(torch::nn::Module& module, Batches&& batches, const CalibrateOptions& options, Forward&& forward) {
  auto& range = detail::as_range(batches);
  std::optional<int64_t> total = options.num_batches();
  if constexpr (detail::has_size<std::remove_reference_t<decltype(range)>>::value) {
    const auto n = static_cast<int64_t>(std::size(range));
    total = total ? std::min(*total, n) : n;
  }
  Calibration c(module, options, total);
  for (auto&& batch : range) {
    forward(batch);
    c.step();
    if (c.done()) break;  // before the range fetches (loads) another batch
  }
  c.finish();
  return c.auto_choices();
}

// Calibrates a module holder (a TORCH_MODULE, or torch::nn::Sequential) through its forward,
// called with each batch's input tensor (see batch_input above).
template <typename ModuleType, typename Batches>
std::vector<AutoChoice> calibrate(torch::nn::ModuleHolder<ModuleType>& model, Batches&& batches,
                                  const CalibrateOptions& options = {}) {
  return calibrate(*model, std::forward<Batches>(batches), options,
            [&model](const auto& batch) { model->forward(detail::batch_input(batch)); });
}

}  // namespace torchqat
