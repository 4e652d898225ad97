#include "torchqat/quant_rules.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace torchqat {

void check_num_bits(const char* what, int64_t num_bits) {
  TORCH_CHECK_VALUE(num_bits >= kMinNumBits && num_bits <= kMaxNumBits, what, ": num_bits must be in [",
                    kMinNumBits, ", ", kMaxNumBits, "], got ", num_bits);
}

int64_t quant_bound(int64_t num_bits, bool is_unsigned) {
  check_num_bits("quant_bound", num_bits);
  return (int64_t{1} << (num_bits - 1 + (is_unsigned ? 1 : 0))) - 1;
}

int64_t quant_min(int64_t num_bits, bool is_unsigned, bool narrow_range) {
  const int64_t bound = quant_bound(num_bits, is_unsigned);
  if (is_unsigned) return 0;
  return narrow_range ? -bound : -bound - 1;
}

void check_amax(const char* what, const at::Tensor& amax) {
  if (amax.numel() == 0) return;
  const at::Tensor a = amax.detach().to(at::kFloat);
  // The details below are read only when the check fails.
  if ((at::isfinite(a) & (a >= 0)).all().item<bool>()) return;
  const bool finite = at::isfinite(a).all().item<bool>();
  TORCH_CHECK_VALUE(finite, what, ": amax must be finite, got ", (at::isnan(a).any().item<bool>() ? "NaN" : "Inf"),
                    " (amax shape ", amax.sizes(), ")");
  const float lo = a.min().item<float>();
  TORCH_CHECK_VALUE(lo >= 0.0f, what, ": amax must be >= 0, got ", lo);
}

std::vector<int64_t> amax_axes(c10::SymIntArrayRef amax_sizes) {
  std::vector<int64_t> axes;
  for (size_t d = 0; d < amax_sizes.size(); ++d)
    if (!(amax_sizes[d] == 1)) axes.push_back(static_cast<int64_t>(d));
  return axes;
}

at::Tensor qdq_scale(const at::Tensor& amax, double bound, float zero_scale) {
  const at::Tensor scale = amax.detach().to(at::kCPU, at::kFloat) / bound;
  return at::where(scale < std::numeric_limits<float>::min(), at::full_like(scale, zero_scale), scale);
}

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
