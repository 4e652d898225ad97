#pragma once
// MaxCalibrator: running abs-max, per tensor or per channel over any set of kept dims.
#include <vector>

#include "torchqat/calib/calibrator.h"

namespace torchqat {
namespace calib {

class MaxCalibrator : public Calibrator {
 public:
  // axis: the dims that keep their own amax (empty = per tensor).
  MaxCalibrator(int64_t num_bits = 8, std::vector<int64_t> axis = {}, bool is_unsigned = false,
                bool track_amax = false);

  void collect(const at::Tensor& x) override;
  void reset() override;
  std::optional<at::Tensor> compute_amax(const AmaxOptions& opts = {}) override;
  std::string name() const override { return "MaxCalibrator"; }

  // The running amax (undefined before any collect); settable for merging across processes
  // (a finite tensor, every value >= 0).
  const at::Tensor& calib_amax() const { return amax_; }
  void set_calib_amax(const at::Tensor& amax);
  // Per-batch amaxes, when track_amax.
  const std::vector<at::Tensor>& amaxs() const { return amaxs_; }
  const std::vector<int64_t>& axis() const { return axis_; }

 private:
  int64_t num_bits_;
  std::vector<int64_t> axis_;
  bool unsigned_;
  bool track_;
  at::Tensor amax_;
  std::vector<at::Tensor> amaxs_;
};

}  // namespace calib
}  // namespace torchqat
