#pragma once
// The device-independent bodies of abs_max and histogram_abs: argument checks (each error names
// the argument and its value) and the result check; each device's registration instantiates
// them with its own kernel.
#include <cmath>
#include <limits>

#include "ops/calib_kernels.h"
#include "torchqat/checks.h"

namespace torchqat {
namespace detail {

using AbsMaxKernel = void (*)(const ReduceLayout&);
using HistogramKernel = void (*)(const at::Tensor&, at::Tensor&, float, bool);

// NaN/Inf in x would become amax and poison every scale derived from it: refuse them. On CPU
// the check is free; on CUDA it costs a device sync and follows set_cuda_amax_checks().
inline void check_finite_result(const char* op, const at::Tensor& out) {
  if (out.is_cuda() && !cuda_amax_checks()) return;
  TORCH_CHECK_VALUE(at::isfinite(out).all().item<bool>(), op, ": x contains ",
                    at::isnan(out).any().item<bool>() ? "NaN" : "Inf (or a value beyond the float32 range)",
                    "; its amax would not be finite. Remove non-finite values before calibrating");
}

template <AbsMaxKernel K>
at::Tensor abs_max_impl(const at::Tensor& x, at::IntArrayRef keep_dims) {
  const char* op = "torchqat.abs_max";
  ReduceLayout L = reduce_layout(op, x, keep_dims);
  K(L);
  check_finite_result(op, L.out);
  return L.out;
}

// histogram_abs's argument checks; returns 1 / bin_width as the float32 the kernels use.
// Reads sizes as SymInts: the Meta kernel calls it too.
inline float check_histogram(const char* op, const at::Tensor& x, const at::Tensor& hist, double bin_width) {
  TORCH_CHECK_VALUE(x.defined(), op, ": x is undefined");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf ||
                       x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kDouble,
                   op, ": x must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  TORCH_CHECK_TYPE(hist.scalar_type() == at::kLong, op, ": hist must be int64, got ", hist.scalar_type());
  TORCH_CHECK_VALUE(hist.dim() == 1 && hist.sym_numel() >= 1, op,
                    ": hist must be 1-d with at least one bin, got shape ", hist.sym_sizes());
  TORCH_CHECK_VALUE(hist.is_contiguous(), op, ": hist must be contiguous");
  TORCH_CHECK_VALUE(hist.device() == x.device(), op, ": hist is on ", hist.device(), " but x is on ", x.device());
  const float inv = static_cast<float>(1.0 / bin_width);
  TORCH_CHECK_VALUE(bin_width > 0 && std::isfinite(bin_width) && std::isfinite(inv) && inv > 0, op,
                    ": bin_width must be a positive finite number whose inverse is a finite float32, got ",
                    bin_width);
  return inv;
}

template <HistogramKernel K>
void histogram_abs_impl(const at::Tensor& x, at::Tensor& hist, double bin_width, bool skip_zeros) {
  const float inv = check_histogram("torchqat.histogram_abs", x, hist, bin_width);
  if (x.numel() == 0) return;
  // A histogram ignores element order: any dense layout is read as it lies in memory.
  K(x.is_non_overlapping_and_dense() ? x : x.contiguous(), hist, inv, skip_zeros);
}

}  // namespace detail
}  // namespace torchqat
