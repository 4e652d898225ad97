#pragma once
// Internal: calibrate(method "auto"): recording the inputs of activation quantizers during
// collection, and choosing each one's amax among the histogram searches by its layer's output
// error (the rule of python/torchqat/calib/auto.py; see include/torchqat/calibrate.h).
#include <torch/nn/module.h>

#include <memory>
#include <vector>

#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calibrate.h"

namespace torchqat::calib::detail {

// A histogram calibrator that also keeps copies of what it collects during the first
// `batches` batches (counted by the shared counter calibrate advances), up to kMaxCalls per batch.
class RecordingCalibrator : public Calibrator {
 public:
  static constexpr int64_t kMaxCalls = 64;
  RecordingCalibrator(std::shared_ptr<HistogramCalibrator> inner, std::shared_ptr<const int64_t> batch,
                      int64_t batches)
      : inner_(std::move(inner)), batch_(std::move(batch)), batches_(batches) {}
  void collect(const at::Tensor& x) override;
  void reset() override;
  std::optional<at::Tensor> compute_amax(const AmaxOptions& opts = {}) override { return inner_->compute_amax(opts); }
  std::string name() const override { return inner_->name(); }

  const std::shared_ptr<HistogramCalibrator>& inner() const { return inner_; }
  // Per recorded batch, the tensors in the order they were collected.
  const std::vector<std::vector<at::Tensor>>& records() const { return records_; }

 private:
  std::shared_ptr<HistogramCalibrator> inner_;
  std::shared_ptr<const int64_t> batch_;
  int64_t batches_;
  std::vector<std::vector<at::Tensor>> records_;
};

// Chooses and sets the amax of every quantizer in `activations` (each holding a
// RecordingCalibrator, replaced by its histogram afterwards); weights must hold their amax already.
std::vector<AutoChoice> choose_amax(torch::nn::Module& module, const std::vector<QuantizerEntry>& activations,
                                    bool strict);

}  // namespace torchqat::calib::detail
