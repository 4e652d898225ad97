// abs_max: the statistic of max calibration and of dynamic quantizers. Written with ATen
// reductions so one implementation serves every device: per tensor it is one aminmax pass
// (no |x| temporary), per channel an amax over |x|.
#include <torch/library.h>

#include "ops/quant_layout.h"
#include "torchqat/checks.h"

namespace torchqat {
namespace detail {
namespace {

at::Tensor abs_max(const at::Tensor& x, at::IntArrayRef keep_dims) {
  const char* op = "torchqat.abs_max";
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), op, ": x must be a floating tensor, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.numel() > 0, op, ": x is empty (shape ", x.sizes(), ")");
  std::vector<bool> keep(static_cast<size_t>(x.dim()), false);
  for (int64_t d : keep_dims) {
    TORCH_CHECK_VALUE(d >= -x.dim() && d < x.dim(), op, ": keep_dims entry ", d, " is out of range for x with ",
                      x.dim(), " dimensions");
    keep[static_cast<size_t>(d < 0 ? d + x.dim() : d)] = true;
  }
  std::vector<int64_t> reduce;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (!keep[static_cast<size_t>(d)]) reduce.push_back(d);
  at::Tensor out;
  if (reduce.size() == static_cast<size_t>(x.dim())) {
    auto [lo, hi] = at::aminmax(x);
    out = at::maximum(hi, -lo).to(at::kFloat);
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    if (x.dim() > 0 && !keep_dims.empty()) out = out.reshape(shape);
  } else if (reduce.empty()) {
    out = x.abs().to(at::kFloat);
  } else {
    out = at::amax(x.abs(), reduce, /*keepdim=*/true).to(at::kFloat);
  }
  // A NaN or Inf in the data would become the amax: refuse it rather than poison the scale.
  if (!out.is_cuda() || cuda_amax_checks()) {
    TORCH_CHECK_VALUE(at::isfinite(out).all().item<bool>(), op,
                      ": x contains NaN or Inf, which would make amax non-finite");
  }
  return out;
}

}  // namespace
}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_FRAGMENT(torchqat, m) { m.def("abs_max(Tensor x, int[] keep_dims=[]) -> Tensor"); }

TORCH_LIBRARY_IMPL(torchqat, CompositeExplicitAutograd, m) { m.impl("abs_max", &torchqat::detail::abs_max); }
