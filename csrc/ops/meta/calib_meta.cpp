// Meta kernels of the calibration statistics (see fake_quant_meta.cpp). abs_max's output shape
// depends only on x's shape and keep_dims; histogram_abs fills a histogram the caller sized
// (its bins argument is hist itself), so no output size depends on the data. The finite-result
// check of abs_max needs the data and stays in the real kernels.
#include <torch/library.h>

#include "ops/calib_ops_impl.h"

namespace torchqat {
namespace detail {
namespace {

at::Tensor abs_max_meta(const at::Tensor& x, at::IntArrayRef keep_dims) {
  const std::vector<bool> keep = check_reduce("torchqat.abs_max", x, keep_dims);
  return at::empty_symint(reduce_shape(x, keep), x.options().dtype(at::kFloat));
}

void histogram_abs_meta(const at::Tensor& x, at::Tensor& hist, double bin_width, bool /*skip_zeros*/) {
  check_histogram("torchqat.histogram_abs", x, hist, bin_width);
}

}  // namespace
}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, Meta, m) {
  m.impl("abs_max", &torchqat::detail::abs_max_meta);
  m.impl("histogram_abs", &torchqat::detail::histogram_abs_meta);
}
