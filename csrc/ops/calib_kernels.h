#pragma once
// Per-device kernels of the calibration statistics: abs_max (a max reduction of |x|) and
// histogram_abs (a histogram of |x|). The op layer (calib_ops.cpp) has validated the arguments
// and made x dense; the kernels walk x in memory order.
#include <ATen/ATen.h>

#include <vector>

namespace torchqat {
namespace detail {

// x seen as nested loops in memory order, dims[0] outermost, adjacent dims merged where both x
// and out allow it. The out element of an x element is sum(coord[d] * out_strides[d]); reduced
// dims have out stride 0. sizes.size() >= 1; the innermost dim has x stride 1.
struct ReduceLayout {
  at::Tensor x;                      // dense (non-overlapping) input, strides kept
  at::Tensor out;                    // float32, contiguous, keepdim shape (0-d per tensor), zeros
  std::vector<int64_t> sizes;        // coalesced dims, outermost first
  std::vector<int64_t> out_strides;  // element strides into out; 0 = reduced
};

// Checks x and keep_dims (errors name the argument and value); returns which dims are kept.
// Reads sizes as SymInts: the Meta kernel calls it too.
std::vector<bool> check_reduce(const char* op, const at::Tensor& x, at::IntArrayRef keep_dims);

// abs_max's output shape: x's sizes on kept dims and 1 elsewhere, or 0-d when none is kept.
std::vector<c10::SymInt> reduce_shape(const at::Tensor& x, const std::vector<bool>& keep);

// check_reduce, then the layout the kernels walk.
ReduceLayout reduce_layout(const char* op, const at::Tensor& x, at::IntArrayRef keep_dims);

// Fills L.out with max |x| per kept index. NaN and Inf are not skipped: the kernels take the max
// over the IEEE bit patterns of |x|, where finite < Inf < NaN, so a non-finite value reaches out
// and the op layer can refuse it with one check of the (small) result.
void abs_max_cpu_kernel(const ReduceLayout& L);

// hist[min(floor(|x| * inv_width), bins - 1)] += 1 for every finite element (non-zero when
// skip_zeros); hist is int64, contiguous, on x's device. NaN/Inf elements are not counted.
void histogram_abs_cpu_kernel(const at::Tensor& x, at::Tensor& hist, float inv_width, bool skip_zeros);

#ifdef TORCHQAT_WITH_CUDA
void abs_max_cuda_kernel(const ReduceLayout& L);
void histogram_abs_cuda_kernel(const at::Tensor& x, at::Tensor& hist, float inv_width, bool skip_zeros);
#endif

// The bin of one |x| value: shared by both devices so CPU and CUDA histograms are identical.
// Returns -1 for values that are not counted.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline int64_t histogram_bin(float a, float inv_width, int64_t bins, float fbins, bool skip_zeros) {
  if (!(a <= 3.402823466e38f)) return -1;  // NaN or Inf
  if (skip_zeros && a == 0.0f) return -1;
  const float f = a * inv_width;
  int64_t b = f < fbins ? static_cast<int64_t>(f) : bins - 1;
  return b < bins ? b : bins - 1;
}

}  // namespace detail
}  // namespace torchqat
