// numpy's binning (np.histogram, np.linspace, np.arange in float32) for the torch_hist=False path.
#include "torchqat/calib/numpy_histogram.h"

#include <algorithm>
#include <cmath>


namespace torchqat {
namespace calib {

namespace {

// np.histogram(v, bins=n) edges for float32 data: np.linspace in float32 (step = (hi - lo) / n,
// edge i = float32(i) * step + lo, the last edge hi), each operation rounded to float32.
at::Tensor linspace_edges(float lo, float hi, int64_t n) {
  if (lo == hi) {  // np.histogram widens an empty range by 0.5 on each side
    lo -= 0.5f;
    hi += 0.5f;
  }
  const volatile float step = (hi - lo) / static_cast<float>(n);
  at::Tensor e = at::empty({n + 1}, at::kFloat);
  float* p = e.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const volatile float prod = static_cast<float>(i) * step;  // volatile: no fused multiply-add
    p[i] = prod + lo;
  }
  p[n] = hi;
  return e;
}

// np.hstack((edges, np.arange(edges[-1] + width, vmax + width, width))). numpy's arange of
// float32 scalars is float64 (so are the edges from then on), its length the ceil of the float32
// quotient and its second value the float32 sum; the rest is start + i * delta in float64.
at::Tensor grow_edges(const at::Tensor& edges, float vmax) {
  const int64_t n = edges.numel();
  int64_t len = 0;
  double start = 0.0;
  double second = 0.0;
  if (edges.scalar_type() == at::kFloat) {
    const float* e = edges.data_ptr<float>();
    const float width = e[1] - e[0];
    const float start32 = e[n - 1] + width;
    const float stop32 = vmax + width;
    const float quotient = (stop32 - start32) / width;
    len = static_cast<int64_t>(std::ceil(static_cast<double>(quotient)));
    start = start32;
    second = static_cast<double>(start32 + width);
  } else {
    const double* e = edges.data_ptr<double>();
    const double width = e[1] - e[0];
    start = e[n - 1] + width;
    const double stop = static_cast<double>(vmax) + width;
    len = static_cast<int64_t>(std::ceil((stop - start) / width));
    second = start + width;
  }
  len = std::max<int64_t>(len, 0);
  at::Tensor out = at::empty({n + len}, at::kDouble);
  double* o = out.data_ptr<double>();
  const at::Tensor old = edges.to(at::kDouble);
  std::copy(old.data_ptr<double>(), old.data_ptr<double>() + n, o);
  const double delta = second - start;
  for (int64_t i = 0; i < len; ++i) {
    const volatile double prod = static_cast<double>(i) * delta;  // volatile: no fused multiply-add
    o[n + i] = i == 1 ? second : start + prod;
  }
  return out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> numpy_histogram_collect(const at::Tensor& x, const at::Tensor& hist,
                                                           const at::Tensor& edges, int64_t num_bins,
                                                           bool skip_zeros) {
  const char* what = "HistogramCalibrator(torch_hist=False).collect";
  TORCH_CHECK_VALUE(num_bins >= 2, what, ": num_bins must be >= 2, got ", num_bins);
  TORCH_CHECK_VALUE(hist.defined() == edges.defined(), what, ": hist and edges are set together");
  at::Tensor v = x.detach().to(at::kCPU).to(at::kFloat).abs().reshape({-1});
  TORCH_CHECK_VALUE(at::isfinite(v).all().item<bool>(), what, ": x contains NaN or Inf");
  if (skip_zeros) v = v.masked_select(v != 0);
  if (v.numel() == 0) {  // numpy raises on the max of nothing; nothing to count
    TORCH_CHECK_VALUE(hist.defined(), what, ": no values to histogram (empty input, or only zeros with skip_zeros)");
    return {hist, edges};
  }
  at::Tensor e;
  if (!edges.defined()) {
    e = linspace_edges(v.min().item<float>(), v.max().item<float>(), num_bins);
  } else {
    TORCH_CHECK_VALUE(edges.dim() == 1 && edges.numel() == hist.numel() + 1 && edges.numel() >= 2, what,
                      ": edges must have hist.numel() + 1 values, got ", edges.numel(), " for ", hist.numel(), " bins");
    TORCH_CHECK_TYPE(edges.scalar_type() == at::kFloat || edges.scalar_type() == at::kDouble, what,
                     ": edges must be float32 or float64, got ", edges.scalar_type());
    e = edges.to(at::kCPU).contiguous();
    const float vmax = v.max().item<float>();
    if (static_cast<double>(vmax) > e[-1].item<double>()) e = grow_edges(e, vmax);
  }
  const int64_t n = e.numel() - 1;
  // edges[i] <= v < edges[i+1]; v == edges[-1] goes to the last bin; outside the range is dropped
  // (compared in the edges' dtype, as numpy does).
  const at::Tensor ve = v.to(e.scalar_type());
  const at::Tensor kept = ve.masked_select((ve >= e[0]) & (ve <= e[-1]));
  at::Tensor idx = at::searchsorted(e, kept, /*out_int32=*/false, /*right=*/true) - 1;
  idx = idx.clamp_max(n - 1);
  at::Tensor counts = at::bincount(idx, {}, n).to(at::kLong);
  if (hist.defined()) counts.narrow(0, 0, hist.numel()).add_(hist.to(at::kCPU, at::kLong));
  return {counts, e};
}

}  // namespace calib
}  // namespace torchqat
