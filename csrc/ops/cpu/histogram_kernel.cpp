// CPU histogram of |x|: contiguous chunks over threads, each counting into private histograms
// that are summed into hist at the end (no atomics). Bin indices are computed a block at a time
// in a vectorisable loop; the increments then go to one of four interleaved sub-histograms, so
// runs of equal values (the zero bin of ReLU outputs) do not serialise on one counter.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/calib_kernels.h"
#include "ops/cpu/multiversion.h"

namespace torchqat {
namespace detail {
namespace {

constexpr int64_t kGrain = 1 << 16;
constexpr int64_t kBlock = 512;
constexpr int kWays = 4;

// Bins of a block of values; -1 where not counted.
template <typename T>
TORCHQAT_MULTIVERSION
void bin_block(const T* __restrict x, int64_t n, int32_t* __restrict idx, float inv, int32_t bins, float fbins,
               bool skip_zeros) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::abs(static_cast<float>(x[i]));
    idx[i] = static_cast<int32_t>(histogram_bin(a, inv, bins, fbins, skip_zeros));
  }
}

template <typename T>
void count_chunk(const T* x, int64_t n, float inv, int64_t bins, bool skip_zeros, int64_t* sub) {
  const float fbins = static_cast<float>(bins);
  int32_t idx[kBlock];
  for (int64_t o = 0; o < n; o += kBlock) {
    const int64_t len = std::min(kBlock, n - o);
    bin_block(x + o, len, idx, inv, static_cast<int32_t>(bins), fbins, skip_zeros);
    int64_t i = 0;
    for (; i + kWays <= len; i += kWays) {
      for (int w = 0; w < kWays; ++w) {
        const int32_t b = idx[i + w];
        if (b >= 0) ++sub[w * bins + b];
      }
    }
    for (; i < len; ++i)
      if (idx[i] >= 0) ++sub[idx[i]];
  }
}

}  // namespace

void histogram_abs_cpu_kernel(const at::Tensor& x, at::Tensor& hist, float inv_width, bool skip_zeros) {
  const int64_t n = x.numel();
  const int64_t bins = hist.numel();
  TORCH_CHECK_VALUE(bins < (int64_t{1} << 31), "torchqat.histogram_abs: hist has ", bins,
                    " bins; at most 2^31 - 1 are supported");
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + kGrain - 1) / kGrain));
  // Private histograms must stay cheaper than the data they count.
  chunks = std::max<int64_t>(1, std::min<int64_t>(chunks, n / (kWays * bins) + 1));
  std::vector<std::vector<int64_t>> sub(static_cast<size_t>(chunks),
                                        std::vector<int64_t>(static_cast<size_t>(kWays * bins), 0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "torchqat_histogram_abs_cpu", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const int64_t per = (n + chunks - 1) / chunks;
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        const int64_t lo = std::min(n, c * per);
        const int64_t hi = std::min(n, lo + per);
        count_chunk(px + lo, hi - lo, inv_width, bins, skip_zeros, sub[static_cast<size_t>(c)].data());
      }
    });
  });
  int64_t* h = hist.data_ptr<int64_t>();
  at::parallel_for(0, bins, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      int64_t s = 0;
      for (const auto& v : sub)
        for (int w = 0; w < kWays; ++w) s += v[static_cast<size_t>(w * bins + k)];
      h[k] += s;
    }
  });
}

}  // namespace detail
}  // namespace torchqat
