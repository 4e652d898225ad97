#pragma once
// The statistics operator of histogram calibration, callable from C++ (Python:
// torch.ops.torchqat.histogram_abs). Like every torchqat op it goes through the dispatcher, so
// the CPU or CUDA kernel is chosen by x's device. (abs_max, the statistic of max calibration,
// is in torchqat/ops.h.)
#include <ATen/ATen.h>

namespace torchqat {

// Adds a histogram of |x| to hist in place: bin i counts |x| in [i, i+1) * bin_width, computed
// in float32 as floor(|x| * float(1/bin_width)); values at or past the last bin's right edge
// count in the last bin (callers grow hist first to cover the data). Zeros are skipped when
// skip_zeros; NaN and Inf are never counted (callers that must refuse them check the max).
// hist: int64, 1-d, contiguous, on x's device. On CUDA this never synchronises with the host.
void histogram_abs(const at::Tensor& x, at::Tensor& hist, double bin_width, bool skip_zeros = false);

}  // namespace torchqat
