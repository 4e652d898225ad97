#pragma once
// amax searches over a histogram of |x| (bins of equal width starting at 0), with
// pytorch-quantization's definitions (calib/histogram.py). counts: int64 counts; bin i spans
// [i*width, (i+1)*width). Plain functions on a host vector: the histogram calibrator copies its
// (small) histogram to the CPU once per search.
#include <cstdint>
#include <vector>

#include "torchqat/quant_descriptor.h"

namespace torchqat {
namespace calib {

// KL search. With bins[0] = bins[1] (the zero bin suppressed), for i = start_bin,
// start_bin + stride, ... <= bins: P = the first i bins with every count past them added to bin
// i-1; Q = the first i bins merged into 2^(num_bits-1+unsigned) levels, each level's count spread
// evenly over its non-empty bins; pick the LAST i minimising KL(P || Q); amax = i * width (the
// left edge of bin i). Candidates whose first i bins are all empty have no Q: pytorch-quantization
// gets a NaN divergence there and NaN wins its argmin (an amax below every value); they are
// skipped here.
double amax_entropy(const std::vector<int64_t>& counts, double width, int64_t num_bits, bool is_unsigned,
                    int64_t start_bin = 128, int64_t stride = 1);

// idx = the first bin where the CDF (cumsum(counts / total)) reaches percentile / 100;
// amax = idx * width (the bin's left edge). percentile in (0, 100].
double amax_percentile(const std::vector<int64_t>& counts, double width, double percentile);

// For i = start_bin, start_bin + stride, ... < bins: fake-quantize the bin centres (float32,
// narrow range, the fake_quant kernels' arithmetic) with amax = centre i and sum count * (q - centre)^2 (in
// float64: counts are exact); amax = the centre of the FIRST minimum. Bin centres beyond
// float32's range are an error.
// format kE4M3: the centres are FP8 E4M3 fake-quantized (fake_quant_e4m3's arithmetic; num_bits and
// is_unsigned are then not used), as pytorch-quantization 2.2's mse search does for num_bits=(4, 3).
double amax_mse(const std::vector<int64_t>& counts, double width, int64_t num_bits, bool is_unsigned,
                int64_t start_bin = 128, int64_t stride = 1, QuantFormat format = QuantFormat::kInt);

}  // namespace calib
}  // namespace torchqat
