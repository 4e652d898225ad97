#pragma once
// HistogramCalibrator: an int64 histogram of |x| from 0, grown by appending bins of the same
// width when a later batch exceeds the range (pytorch-quantization's behaviour, without its
// float32 counts that saturate at 2^24, and bounded at max_bins()); amax by entropy,
// percentile or mse search.
//
// The first batch with a non-zero value fixes the range [0, max] split into num_bins bins
// (zeros seen before that count in bin 0). Per batch there is one small host read, the batch
// max: it decides whether the range grows and refuses NaN/Inf data (c10::ValueError) before
// any of it is counted. The counts stay on the data's device (histogram_abs op).
#include <functional>
#include <optional>
#include <vector>

#include "torchqat/calib/calibrator.h"
#include "torchqat/quant_descriptor.h"

namespace torchqat {
namespace calib {

class HistogramCalibrator : public Calibrator {
 public:
  // axis must be empty/nullopt: the histogram is per tensor (per-channel calibration: use
  // MaxCalibrator). num_bins >= 2^(num_bits-1+unsigned), the levels the entropy search merges into.
  // format kE4M3 (FP8): num_bits is not used, mse searches with FP8 E4M3 fake quantization and
  // entropy (defined by merging bins into integer levels) is refused.
  HistogramCalibrator(int64_t num_bits = 8, std::optional<std::vector<int64_t>> axis = std::nullopt,
                      bool is_unsigned = false, int64_t num_bins = 2048, bool skip_zeros = false,
                      QuantFormat format = QuantFormat::kInt);

  void collect(const at::Tensor& x) override;
  void reset() override;
  // method "entropy" | "percentile" | "mse" (AmaxOptions); a 0-d float tensor on the
  // histogram's device, or nullopt before any collect. All-zero data gives amax 0.
  std::optional<at::Tensor> compute_amax(const AmaxOptions& opts = {}) override;
  std::string name() const override { return "HistogramCalibrator"; }

  // The histogram (int64, on the data's device) and its bin width; undefined/0 before the
  // first non-zero value.
  const at::Tensor& histogram() const { return hist_; }
  double bin_width() const { return width_; }
  // Replaces the state (merging across processes); hist: 1-d int64 counts >= 0.
  void set_state(const at::Tensor& hist, double bin_width);
  // Makes the range cover [0, vmax]: fixes the bin width on first use, else grows. Distributed
  // calibration calls it with the all-reduced batch max so every rank bins with one width.
  void reserve_range(double vmax);
  // While no range is fixed, collect passes each batch max through agree and fixes the range from
  // its result (distributed calibration: the max over every rank, calib::range_agreement), so all
  // ranks bin with one width. Empty: the batch's own max.
  void set_range_agreement(std::function<double(double)> agree) { agree_ = std::move(agree); }
  // Extends the histogram to num_bins bins of the current width (zeros appended).
  void grow_to(int64_t num_bins);
  // The most bins growth keeps (64 x num_bins): beyond it, pairs of bins merge and the width
  // doubles. pytorch-quantization grows without bound; both agree up to a 64x range growth.
  int64_t max_bins() const { return num_bins_ * 64; }
  // Values collected while every value so far was zero (no range yet); 0 once a range is fixed.
  int64_t pending_zeros() const { return pending_zeros_; }

  int64_t num_bits() const { return num_bits_; }
  QuantFormat format() const { return format_; }
  bool is_unsigned() const { return unsigned_; }
  int64_t num_bins() const { return num_bins_; }
  bool skip_zeros() const { return skip_zeros_; }

 private:
  void coarsen();  // merges bin pairs: width x2, bins / 2 (rounded up)

  int64_t num_bits_;
  QuantFormat format_;
  bool unsigned_;
  int64_t num_bins_;
  bool skip_zeros_;
  at::Tensor hist_;
  double width_ = 0.0;
  std::function<double(double)> agree_;
  int64_t pending_zeros_ = 0;  // zeros seen before any non-zero value fixed the bin width (counted in bin 0 then)
};

}  // namespace calib
}  // namespace torchqat
