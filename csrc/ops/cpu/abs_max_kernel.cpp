// CPU abs_max: one read of x in memory order, split into contiguous chunks over threads. The max
// is taken over the IEEE bit patterns of |x| as int32 (|x| = bits & 0x7fffffff), which orders
// finite < Inf < NaN and vectorises to integer max instructions, so NaN/Inf reach the result
// instead of being dropped by a float max. Each chunk reduces into its own buffer; buffers are
// merged at the end, so threads never share an output element.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/calib_kernels.h"
#include "ops/cpu/multiversion.h"

namespace torchqat {
namespace detail {
namespace {

constexpr int64_t kGrain = 1 << 16;

template <typename T>
inline int32_t abs_bits(T v) {
  const float f = static_cast<float>(v);
  int32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b & 0x7fffffff;
}

// max of |x[0..n)| as bits, starting from m.
template <typename T>
TORCHQAT_MULTIVERSION
int32_t reduce_run(const T* __restrict x, int64_t n, int32_t m) {
  for (int64_t i = 0; i < n; ++i) m = std::max(m, abs_bits(x[i]));
  return m;
}

// acc[i] = max(acc[i], |x[i]|) for a run of kept elements that are consecutive in out.
template <typename T>
TORCHQAT_MULTIVERSION
void keep_run(const T* __restrict x, int64_t n, int32_t* __restrict acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], abs_bits(x[i]));
}

template <typename T>
void keep_run_strided(const T* x, int64_t n, int32_t* acc, int64_t stride) {
  for (int64_t i = 0; i < n; ++i) acc[i * stride] = std::max(acc[i * stride], abs_bits(x[i]));
}

// Out offset of the first element of row `row` (a row is one run of the innermost dim).
int64_t row_base(const ReduceLayout& L, int64_t row) {
  int64_t base = 0;
  for (int64_t d = static_cast<int64_t>(L.sizes.size()) - 2; d >= 0 && row > 0; --d) {
    const auto u = static_cast<size_t>(d);
    base += (row % L.sizes[u]) * L.out_strides[u];
    row /= L.sizes[u];
  }
  return base;
}

template <typename T>
void reduce_chunk(const ReduceLayout& L, const T* x, int64_t begin, int64_t end, int32_t* acc) {
  const int64_t inner = L.sizes.back();
  const int64_t istride = L.out_strides.back();
  int64_t o = begin;
  while (o < end) {
    const int64_t row = o / inner;
    const int64_t j = o - row * inner;
    const int64_t len = std::min(end - o, inner - j);
    const int64_t base = row_base(L, row);
    if (istride == 0) {
      acc[base] = reduce_run(x + o, len, acc[base]);
    } else if (istride == 1) {
      keep_run(x + o, len, acc + base + j);
    } else {
      keep_run_strided(x + o, len, acc + base + j * istride, istride);
    }
    o += len;
  }
}

}  // namespace

void abs_max_cpu_kernel(const ReduceLayout& L) {
  const int64_t n = L.x.numel();
  const int64_t nout = L.out.numel();
  // One private accumulator per chunk; fewer chunks when out is so large that copies of it would
  // cost more than the reduction (reducing few elements into many outputs).
  int64_t chunks = std::min<int64_t>(at::get_num_threads(), (n + kGrain - 1) / kGrain);
  chunks = std::max<int64_t>(1, std::min<int64_t>(chunks, n / (4 * nout)));
  std::vector<std::vector<int32_t>> acc(static_cast<size_t>(chunks), std::vector<int32_t>(nout, 0));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, L.x.scalar_type(), "torchqat_abs_max_cpu", [&] {
    const scalar_t* x = L.x.const_data_ptr<scalar_t>();
    const int64_t per = (n + chunks - 1) / chunks;
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) {
        reduce_chunk(L, x, c * per, std::min(n, (c + 1) * per), acc[static_cast<size_t>(c)].data());
      }
    });
  });
  float* out = L.out.data_ptr<float>();
  at::parallel_for(0, nout, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      int32_t m = acc[0][static_cast<size_t>(k)];
      for (size_t c = 1; c < acc.size(); ++c) m = std::max(m, acc[c][static_cast<size_t>(k)]);
      std::memcpy(out + k, &m, sizeof(m));
    }
  });
}

}  // namespace detail
}  // namespace torchqat
