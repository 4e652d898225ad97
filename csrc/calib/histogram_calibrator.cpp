#include "torchqat/calib/histogram_calibrator.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "torchqat/calib/amax_search.h"
#include "torchqat/calib/stats.h"
#include "torchqat/ops.h"
#include "torchqat/quant_rules.h"

namespace torchqat {
namespace calib {

HistogramCalibrator::HistogramCalibrator(int64_t num_bits, std::optional<std::vector<int64_t>> axis,
                                         bool is_unsigned, int64_t num_bins, bool skip_zeros, QuantFormat format)
    : num_bits_(format == QuantFormat::kE4M3 ? 8 : num_bits),
      format_(format),
      unsigned_(is_unsigned),
      num_bins_(num_bins),
      skip_zeros_(skip_zeros) {
  TORCH_CHECK_VALUE(!(format == QuantFormat::kE4M3 && is_unsigned),
                    "HistogramCalibrator: num_bits=(4, 3) (FP8 E4M3) is a signed format: unsigned must be false");
  num_bits = num_bits_;
  TORCH_CHECK_VALUE(!axis || axis->empty(), "HistogramCalibrator: axis must be None (the histogram is per tensor), got ",
                    c10::IntArrayRef(*axis), "; use MaxCalibrator for per-channel calibration");
  check_num_bits("HistogramCalibrator", num_bits);
  const int64_t levels = quant_bound(num_bits, is_unsigned) + 1;
  TORCH_CHECK_VALUE(num_bins >= levels, "HistogramCalibrator: num_bins must be at least ", levels,
                    " (the quantized levels of ", num_bits, (is_unsigned ? "-bit unsigned" : "-bit signed"),
                    " data), got ", num_bins);
}

void HistogramCalibrator::reset() {
  hist_ = at::Tensor();
  width_ = 0.0;
  pending_zeros_ = 0;
}

void HistogramCalibrator::grow_to(int64_t num_bins) {
  TORCH_CHECK(hist_.defined(), "HistogramCalibrator: no histogram to grow (nothing collected yet)");
  const int64_t have = hist_.numel();
  if (num_bins > have) hist_ = at::cat({hist_, at::zeros({num_bins - have}, hist_.options())});
}

void HistogramCalibrator::reserve_range(double vmax) {
  TORCH_CHECK_VALUE(std::isfinite(vmax) && vmax >= 0, "HistogramCalibrator: range must be finite and >= 0, got ",
                    vmax);
  if (vmax == 0.0) return;
  if (width_ == 0.0) {
    // pytorch-quantization: edges = linspace(0, float32 max, num_bins + 1).
    // Floored where 1/width would overflow float32 (the binning kernels' factor): data that
    // small (max |x| < ~1e-35) then fills only the first bins, but is still counted.
    constexpr double kMinWidth = 2.0 / static_cast<double>(std::numeric_limits<float>::max());
    width_ = std::max(static_cast<double>(static_cast<float>(vmax)) / static_cast<double>(num_bins_), kMinWidth);
    hist_ = at::zeros({num_bins_}, at::kLong);
    if (pending_zeros_ > 0 && !skip_zeros_) hist_[0] += pending_zeros_;
    pending_zeros_ = 0;
  } else if (vmax > width_ * static_cast<double>(hist_.numel())) {
    // Append bins of the same width until the range covers vmax; past max_bins() (a range
    // grown 64x), merge pairs of bins first, as often as needed, so a first batch of tiny
    // values cannot make the histogram (and the O(bins^2) mse search) unbounded.
    while (std::ceil(vmax / width_) > static_cast<double>(max_bins())) coarsen();
    grow_to(static_cast<int64_t>(std::ceil(vmax / width_)));
  }
}

void HistogramCalibrator::coarsen() {
  const int64_t n = hist_.numel();
  at::Tensor h = n % 2 ? at::cat({hist_, at::zeros({1}, hist_.options())}) : hist_;
  hist_ = h.view({-1, 2}).sum(1);
  width_ *= 2.0;
}

void HistogramCalibrator::collect(const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK_VALUE(x.defined(), "HistogramCalibrator.collect: x is undefined");
  if (x.numel() == 0) return;
  // Integer (and bool) data is binned as float32, the cast pytorch-quantization makes.
  const at::Tensor xd = at::isIntegralType(x.scalar_type(), /*includeBool=*/true) ? x.detach().to(at::kFloat) : x.detach();
  // The one host read per batch: the batch max. abs_max refuses NaN/Inf (on CUDA when amax
  // checks are on); the read value is checked again so nothing non-finite is ever counted.
  float vmax = 0.0f;  // abs_max is float32: fp64 data beyond its range is refused there
  try {
    vmax = torchqat::abs_max(xd).item<float>();
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, "HistogramCalibrator.collect: ", e.what_without_backtrace());
  }
  TORCH_CHECK_VALUE(std::isfinite(vmax), "HistogramCalibrator.collect: x contains ", std::isnan(vmax) ? "NaN" : "Inf",
                    "; a non-finite value would poison the histogram range");
  if (width_ == 0.0 && agree_) reserve_range(agree_(vmax));  // a range every rank shares
  if (width_ == 0.0 && vmax == 0.0f) {  // only zeros so far: the range is not known yet
    pending_zeros_ += xd.numel();
    return;
  }
  reserve_range(vmax);
  if (hist_.device() != xd.device()) hist_ = hist_.to(xd.device());  // counts live with the data
  torchqat::histogram_abs(xd, hist_, width_, skip_zeros_);
}

void HistogramCalibrator::set_state(const at::Tensor& hist, double bin_width) {
  TORCH_CHECK_VALUE(hist.defined() && hist.dim() == 1 && hist.numel() > 0 && hist.scalar_type() == at::kLong,
                    "HistogramCalibrator.set_state: hist must be a non-empty 1-d int64 tensor");
  TORCH_CHECK_VALUE(bin_width > 0 && std::isfinite(bin_width),
                    "HistogramCalibrator.set_state: bin_width must be > 0 and finite, got ", bin_width);
  TORCH_CHECK_VALUE(hist.min().item<int64_t>() >= 0, "HistogramCalibrator.set_state: hist counts must be >= 0");
  hist_ = hist.detach().contiguous().clone();
  width_ = bin_width;
  pending_zeros_ = 0;
}

std::optional<at::Tensor> HistogramCalibrator::compute_amax(const AmaxOptions& o) {
  const bool known = o.method == "entropy" || o.method == "percentile" || o.method == "mse";
  TORCH_CHECK_VALUE(known, "HistogramCalibrator: unknown calibration method '", o.method,
                    "'; use 'entropy', 'percentile' or 'mse'");
  if (o.method == "percentile") {
    TORCH_CHECK_VALUE(o.percentile > 0.0 && o.percentile <= 100.0,
                      "HistogramCalibrator: percentile must be in (0, 100], got ", o.percentile, " (out of range)");
  } else {
    TORCH_CHECK_VALUE(o.stride >= 1, "HistogramCalibrator: stride must be >= 1, got ", o.stride);
    TORCH_CHECK_VALUE(o.start_bin >= 1, "HistogramCalibrator: start_bin must be >= 1, got ", o.start_bin);
  }
  if (!hist_.defined()) {
    if (pending_zeros_ > 0) return at::zeros({}, at::kFloat);  // only zeros seen: amax 0 quantizes them exactly
    return std::nullopt;
  }
  const at::Tensor h = hist_.cpu().contiguous();
  const int64_t* p = h.const_data_ptr<int64_t>();
  const std::vector<int64_t> counts(p, p + h.numel());
  double amax = 0.0;
  if (o.method == "entropy") {
    TORCH_CHECK_VALUE(format_ != QuantFormat::kE4M3,
                      "HistogramCalibrator: the entropy method merges bins into integer levels and is not defined "
                      "for FP8 E4M3 (num_bits=(4, 3)); use 'mse' or 'percentile'");
    amax = amax_entropy(counts, width_, num_bits_, unsigned_, o.start_bin, o.stride);
  } else if (o.method == "percentile") {
    amax = amax_percentile(counts, width_, o.percentile);
  } else {
    amax = amax_mse(counts, width_, num_bits_, unsigned_, o.start_bin, o.stride, format_);
  }
  // A bin edge past the data can pass FLT_MAX when the data reaches it; the data does not, so
  // clamping keeps every value in range (and the float32 conversion from throwing).
  amax = std::min(amax, static_cast<double>(std::numeric_limits<float>::max()));
  return at::scalar_tensor(amax, at::kFloat).to(hist_.device());
}

}  // namespace calib
}  // namespace torchqat
