#include "torchqat/quant_rules.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace torchqat {

int64_t lsq_sample_count(at::IntArrayRef x_sizes, int64_t amax_numel, bool amax_along_dim0) {
  TORCH_CHECK_VALUE(amax_numel > 0, "lsq_sample_count: amax_numel must be > 0, got ", amax_numel);
  int64_t numel = 1;
  for (int64_t s : x_sizes) numel *= s;
  int64_t n = numel / amax_numel;
  if (!x_sizes.empty() && !amax_along_dim0 && x_sizes[0] > 0) n /= x_sizes[0];
  return std::max<int64_t>(1, n);
}

double lsq_amax_grad_scale(int64_t sample_count, double bound) {
  return 1.0 / (std::sqrt(static_cast<double>(sample_count) * bound) * bound);
}

}  // namespace torchqat
