#pragma once
// pytorch-quantization's numpy histogram path (HistogramCalibrator(torch_hist=False)), reproduced
// bit for bit: the first batch is binned by np.histogram(|x|, bins=num_bins), i.e. num_bins equal
// float32 bins from the data's min to its max (not from 0); a later batch whose max passes the last
// edge appends edges np.arange(last + width, max + width, width) (the edges are float64 from then
// on, as numpy's arange makes them), and every batch is binned
// on the current edges: v in bin i when edges[i] <= v < edges[i+1], the last bin closed, values
// outside [edges[0], edges[-1]] dropped. The amax searches then read these edges (amax_search.h
// gives the bin index; the amax is the edge or the float32 centre there).
#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

#include "torchqat/quant_descriptor.h"

namespace torchqat {
namespace calib {

// One collect step. hist (int64) and edges (float32 or float64, hist.numel() + 1 values) are the state so far,
// both undefined before the first batch. Returns the new (hist, edges), on the CPU. x is cast to
// float32 and its absolute value taken; skip_zeros drops exact zeros first. NaN or Inf raise.
std::tuple<at::Tensor, at::Tensor> numpy_histogram_collect(const at::Tensor& x, const at::Tensor& hist,
                                                           const at::Tensor& edges, int64_t num_bins,
                                                           bool skip_zeros);

// amax_mse over explicit float32 bin edges (counts.size() + 1 of them): the centres are
// (edges[1:] + edges[:-1]) / 2 in float32 and the amax is the centre of the first minimum.
// format kE4M3: the search quantizes to FP8 E4M3, as amax_mse.
double amax_mse_edges(const std::vector<int64_t>& counts, const std::vector<float>& edges, int64_t num_bits,
                      bool is_unsigned, int64_t start_bin = 128, int64_t stride = 1,
                      QuantFormat format = QuantFormat::kInt);

}  // namespace calib
}  // namespace torchqat
