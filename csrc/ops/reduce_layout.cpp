// The memory-order view of an abs_max reduction shared by the CPU and CUDA kernels. Walking x
// in memory order (not logical order) keeps every read sequential for any layout
// (channels_last, transposed weights); merging adjacent dims leaves the kernels one of a few
// simple shapes: [R] per tensor, [K, R] weights, [R, K, R] NCHW activations, [R, K] channels-last.
#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

#include "ops/calib_kernels.h"

namespace torchqat {
namespace detail {

namespace {
bool supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}
}  // namespace

std::vector<bool> check_reduce(const char* op, const at::Tensor& x, at::IntArrayRef keep_dims) {
  TORCH_CHECK_VALUE(x.defined(), op, ": x is undefined");
  TORCH_CHECK_TYPE(supported_float(x.scalar_type()), op,
                   ": x must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.sym_numel() > 0, op, ": x is empty (shape ", x.sym_sizes(), "); there is no amax to take");
  const int64_t nd = x.dim();
  std::vector<bool> keep(static_cast<size_t>(nd), false);
  for (int64_t d : keep_dims) {
    TORCH_CHECK_VALUE(d >= -nd && d < nd, op, ": keep_dims entry ", d, " is out of range for x with ", nd,
                      " dimensions (shape ", x.sym_sizes(), ")");
    keep[static_cast<size_t>(d < 0 ? d + nd : d)] = true;
  }
  return keep;
}

std::vector<c10::SymInt> reduce_shape(const at::Tensor& x, const std::vector<bool>& keep) {
  std::vector<c10::SymInt> shape;
  if (std::none_of(keep.begin(), keep.end(), [](bool k) { return k; })) return shape;
  for (int64_t d = 0; d < x.dim(); ++d) shape.push_back(keep[static_cast<size_t>(d)] ? x.sym_size(d) : c10::SymInt(1));
  return shape;
}

ReduceLayout reduce_layout(const char* op, const at::Tensor& x, at::IntArrayRef keep_dims) {
  const std::vector<bool> keep = check_reduce(op, x, keep_dims);
  const int64_t nd = x.dim();
  const bool any_kept = std::any_of(keep.begin(), keep.end(), [](bool k) { return k; });

  ReduceLayout L;
  L.x = x.is_non_overlapping_and_dense() ? x : x.contiguous();

  // out: keepdim shape, contiguous; per tensor it is 0-d (pytorch-quantization's reduce_amax).
  std::vector<int64_t> out_shape;
  std::vector<int64_t> ostride(static_cast<size_t>(nd), 0);
  if (any_kept) {
    out_shape.resize(static_cast<size_t>(nd));
    int64_t s = 1;
    for (int64_t d = nd - 1; d >= 0; --d) {
      const auto u = static_cast<size_t>(d);
      out_shape[u] = keep[u] ? x.size(d) : 1;
      ostride[u] = keep[u] ? s : 0;
      s *= out_shape[u];
    }
  }
  L.out = at::zeros(out_shape, x.options().dtype(at::kFloat));

  // Dims of size > 1 in memory order (largest stride first), then merge neighbours whose x and
  // out strides nest. x is dense, so its strides always nest in memory order.
  std::vector<int64_t> order;
  for (int64_t d = 0; d < nd; ++d)
    if (L.x.size(d) > 1) order.push_back(d);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return L.x.stride(a) > L.x.stride(b); });
  for (int64_t d : order) {
    const int64_t sz = L.x.size(d);
    const int64_t os = ostride[static_cast<size_t>(d)];
    if (!L.sizes.empty() && L.out_strides.back() == os * sz) {
      L.sizes.back() *= sz;
      L.out_strides.back() = os;
    } else {
      L.sizes.push_back(sz);
      L.out_strides.push_back(os);
    }
  }
  if (L.sizes.empty()) {  // a single element
    L.sizes.push_back(1);
    L.out_strides.push_back(0);
  }
  return L;
}

}  // namespace detail
}  // namespace torchqat
