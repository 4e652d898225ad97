#pragma once
// The calibrator interface a TensorQuantizer holds in its calibrator slot: it sees the
// tensors that pass through the quantizer in calib mode and proposes an amax.
#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>

namespace torchqat {
namespace calib {

struct AmaxOptions {
  std::string method = "max";  // ignored by MaxCalibrator; "entropy" | "percentile" | "mse" for histograms
  int64_t start_bin = 128;
  int64_t stride = 1;
  double percentile = 99.99;
};

class Calibrator {
 public:
  virtual ~Calibrator() = default;
  // Accumulate statistics of x (no gradient, no host sync on CUDA).
  virtual void collect(const at::Tensor& x) = 0;
  // Forget everything collected.
  virtual void reset() = 0;
  // The amax the statistics suggest; std::nullopt before any collect.
  virtual std::optional<at::Tensor> compute_amax(const AmaxOptions& opts = {}) = 0;
  virtual std::string name() const = 0;
};

using CalibratorPtr = std::shared_ptr<Calibrator>;

}  // namespace calib
}  // namespace torchqat
