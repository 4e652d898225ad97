// amax searches over an |x| histogram with pytorch-quantization's definitions but without its
// Python loops. The KL search uses prefix sums, so a candidate costs O(levels) instead of
// O(bins), and candidates run in parallel; the mse search fake-quantizes the non-empty bin
// centres per candidate with the kernels' own arithmetic, candidates in parallel.
#include "torchqat/calib/amax_search.h"
#include "torchqat/calib/numpy_histogram.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/cpu/multiversion.h"
#include "ops/quant_layout.h"
#include "ops/quant_math.h"
#include "torchqat/quant_rules.h"

namespace torchqat {
namespace calib {

namespace {

// Bin centres as float32, as pytorch-quantization computes them from its float edges.
float bin_center(int64_t j, double width) { return static_cast<float>((static_cast<double>(j) + 0.5) * width); }

// sum_j w_j (fake_quant(c_j) - c_j)^2: the forward kernels' arithmetic in float, the error in double.
template <typename F>
TORCHQAT_MULTIVERSION
double weighted_sq_error(const float* __restrict c, const double* __restrict w, int64_t m, detail::Step s,
                         float qmin, float qmax) {
  double acc = 0.0;
  for (int64_t j = 0; j < m; ++j) {
    const double d = static_cast<double>(F::one(c[j], s, qmin, qmax)) - static_cast<double>(c[j]);
    acc += w[j] * d * d;
  }
  return acc;
}

void check_hist(const char* what, const std::vector<int64_t>& counts, double width) {
  TORCH_CHECK_VALUE(counts.size() >= 2, what, ": the histogram needs at least 2 bins, got ", counts.size());
  TORCH_CHECK_VALUE(width > 0 && std::isfinite(width), what, ": bin width must be > 0 and finite, got ", width);
  for (size_t j = 0; j < counts.size(); ++j) {
    TORCH_CHECK_VALUE(counts[j] >= 0, what, ": counts must be >= 0, got ", counts[j], " in bin ", j);
  }
}

void check_search(const char* what, int64_t num_bits, int64_t start_bin, int64_t stride, int64_t last_candidate) {
  check_num_bits(what, num_bits);
  TORCH_CHECK_VALUE(stride >= 1, what, ": stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(start_bin >= 1 && start_bin <= last_candidate, what, ": start_bin must be in [1, ",
                    last_candidate, "] for this histogram, got ", start_bin);
}

inline double xlogx(double v) { return v > 0 ? v * std::log(v) : 0.0; }

}  // namespace

double amax_entropy(const std::vector<int64_t>& counts, double width, int64_t num_bits, bool is_unsigned,
                    int64_t start_bin, int64_t stride) {
  const char* what = "amax_entropy";
  check_hist(what, counts, width);
  const int64_t n = static_cast<int64_t>(counts.size());
  check_search(what, num_bits, start_bin, stride, n);
  const int64_t levels = quant_bound(num_bits, is_unsigned) + 1;  // 2^(b-1+unsigned)
  const int shift = __builtin_ctzll(static_cast<unsigned long long>(levels));  // levels is a power of 2

  // Prefix sums over the suppressed histogram: S counts, Z non-empty bins, L sum of c*log(c).
  std::vector<int64_t> c(counts);
  c[0] = c[1];
  std::vector<int64_t> S(n + 1, 0), Z(n + 1, 0);
  std::vector<double> L(n + 1, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    S[j + 1] = S[j] + c[j];
    Z[j + 1] = Z[j] + (c[j] != 0);
    L[j + 1] = L[j] + xlogx(static_cast<double>(c[j]));
  }
  const int64_t ncand = (n - start_bin) / stride + 1;
  const double total = static_cast<double>(S[n]);
  if (S[n] == 0) return static_cast<double>(start_bin + (ncand - 1) * stride) * width;  // all NaN there: last

  const double inf = std::numeric_limits<double>::infinity();
  const double log_total = std::log(total);
  // KL(P||Q) with P, Q normalised, written over raw counts:
  //   sum p log(p/q) = (sum P log P - sum P log Q) / T - log T + log sum(Q),  sum(Q) = S[i].
  // Inside a level every non-empty bin has Q = level count / non-empty bins, so sum P log Q
  // is one term per level (plus the outliers that P adds to bin i-1).
  auto divergence = [&](int64_t i) -> double {
    const int64_t tail = S[n] - S[i];
    if (S[i] == 0) return inf;                    // no Q (see the header)
    if (c[i - 1] == 0 && tail > 0) return inf;    // P > 0 where Q == 0
    const double plogp = L[i - 1] + xlogx(static_cast<double>(c[i - 1] + tail));
    double plogq = 0.0;
    // Bin j < i belongs to level floor(j * levels / i): level k covers [ceil(k*i/levels), ceil((k+1)*i/levels)).
    int64_t lo = 0;
    for (int64_t k = 0; k < levels; ++k) {
      const int64_t hi = ((k + 1) * i + levels - 1) >> shift;
      const int64_t nz = Z[hi] - Z[lo];
      if (nz > 0) {
        const double g = static_cast<double>(S[hi] - S[lo]);
        const double logq = std::log(g / static_cast<double>(nz));
        plogq += g * logq;
        if (hi == i) plogq += static_cast<double>(tail) * logq;  // the level holding bin i-1
      }
      lo = hi;
    }
    return (plogp - plogq) / total - log_total + std::log(static_cast<double>(S[i]));
  };

  std::vector<double> div(static_cast<size_t>(ncand));
  at::parallel_for(0, ncand, 64, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) div[static_cast<size_t>(k)] = divergence(start_bin + k * stride);
  });
  int64_t best = 0;
  for (int64_t k = 1; k < ncand; ++k)
    if (div[static_cast<size_t>(k)] <= div[static_cast<size_t>(best)]) best = k;  // ties: the last
  return static_cast<double>(start_bin + best * stride) * width;
}

double amax_percentile(const std::vector<int64_t>& counts, double width, double percentile) {
  const char* what = "amax_percentile";
  TORCH_CHECK_VALUE(percentile > 0.0 && percentile <= 100.0, what, ": percentile must be in (0, 100], got ",
                    percentile, " (out of range)");
  check_hist(what, counts, width);
  double total = 0;
  for (int64_t v : counts) total += static_cast<double>(v);
  if (total <= 0) return 0.0;
  // The same float64 operations as numpy: cdf = cumsum(hist / total); searchsorted(cdf, p/100).
  const double target = percentile / 100.0;
  double cdf = 0.0;
  const int64_t n = static_cast<int64_t>(counts.size());
  for (int64_t j = 0; j < n; ++j) {
    cdf += static_cast<double>(counts[j]) / total;
    if (cdf >= target) return static_cast<double>(j) * width;
  }
  return static_cast<double>(n) * width;
}

namespace {

// The mse search over bin centres center(j) (float32): the first minimum of
// sum_j count_j (fake_quant(c_j; amax = c_i) - c_j)^2 over candidates i; format kE4M3 fake-quantizes
// to FP8 E4M3 (fake_quant_e4m3's arithmetic; num_bits and is_unsigned unused).
template <typename Center>
double mse_search(const char* what, const std::vector<int64_t>& counts, Center center, int64_t num_bits,
                  bool is_unsigned, int64_t start_bin, int64_t stride, QuantFormat format) {
  const bool e4m3 = format == QuantFormat::kE4M3;
  const int64_t n = static_cast<int64_t>(counts.size());
  check_search(what, e4m3 ? 8 : num_bits, start_bin, stride, n - 1);
  // Empty bins add nothing to any candidate's error: only non-empty bins are quantized.
  std::vector<float> c_nz;
  std::vector<double> w_nz;
  for (int64_t j = 0; j < n; ++j) {
    if (counts[j] != 0) {
      c_nz.push_back(center(j));
      w_nz.push_back(static_cast<double>(counts[j]));
    }
  }
  if (c_nz.empty()) return static_cast<double>(center(start_bin));  // all errors 0: the first
  const int64_t m = static_cast<int64_t>(c_nz.size());
  const int64_t ncand = (n - 1 - start_bin) / stride + 1;
  // narrow_range: pytorch-quantization's fake_tensor_quant default, which its mse search uses.
  const detail::QuantRange r =
      e4m3 ? detail::e4m3_range() : detail::quant_range(what, num_bits, is_unsigned, /*narrow_range=*/true);
  // One loop per candidate, no temporaries: a grown histogram (10^5 bins) costs time in
  // candidates x bins but memory in bins only.
  std::vector<double> err(static_cast<size_t>(ncand));
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / m);
  at::parallel_for(0, ncand, grain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const float a = center(start_bin + i * stride);
      err[static_cast<size_t>(i)] =
          e4m3 ? weighted_sq_error<detail::E4M3Format>(c_nz.data(), w_nz.data(), m, detail::make_e4m3_step(a), r.qmin,
                                                       r.qmax)
               : weighted_sq_error<detail::IntFormat>(c_nz.data(), w_nz.data(), m, detail::make_step(a, r.bound),
                                                      r.qmin, r.qmax);
    }
  });
  const int64_t best = std::min_element(err.begin(), err.end()) - err.begin();  // the first minimum
  return static_cast<double>(center(start_bin + best * stride));
}

}  // namespace

double amax_mse(const std::vector<int64_t>& counts, double width, int64_t num_bits, bool is_unsigned,
                int64_t start_bin, int64_t stride, QuantFormat format) {
  const char* what = "amax_mse";
  check_hist(what, counts, width);
  const int64_t n = static_cast<int64_t>(counts.size());
  // The search quantizes float32 bin centres: past float32's range they would be Inf.
  const double top_center = (static_cast<double>(n) - 0.5) * width;
  TORCH_CHECK_VALUE(top_center <= std::numeric_limits<float>::max(), what, ": bin centres reach ", top_center,
                    " (", n, " bins of width ", width, "), beyond the float32 range the search quantizes in");
  return mse_search(what, counts, [width](int64_t j) { return bin_center(j, width); }, num_bits, is_unsigned,
                    start_bin, stride, format);
}

double amax_mse_edges(const std::vector<int64_t>& counts, const std::vector<float>& edges, int64_t num_bits,
                      bool is_unsigned, int64_t start_bin, int64_t stride, QuantFormat format) {
  const char* what = "amax_mse";
  TORCH_CHECK_VALUE(edges.size() == counts.size() + 1, what, ": ", counts.size(), " counts need ", counts.size() + 1,
                    " bin edges, got ", edges.size());
  check_hist(what, counts, 1.0);
  for (float e : edges) TORCH_CHECK_VALUE(std::isfinite(e) && e >= 0.0f, what, ": bin edges must be finite and >= 0");
  // (edges[1:] + edges[:-1]) / 2 in float32, as pytorch-quantization computes its centres.
  std::vector<float> centers(counts.size());
  for (size_t j = 0; j < centers.size(); ++j) centers[j] = (edges[j + 1] + edges[j]) / 2.0f;
  return mse_search(what, counts, [&centers](int64_t j) { return centers[static_cast<size_t>(j)]; }, num_bits,
                    is_unsigned, start_bin, stride, format);
}

}  // namespace calib
}  // namespace torchqat
