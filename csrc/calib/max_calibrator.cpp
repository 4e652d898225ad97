#include "torchqat/calib/max_calibrator.h"

#include <torch/torch.h>

#include "torchqat/ops.h"
#include "torchqat/quant_rules.h"

namespace torchqat {
namespace calib {

MaxCalibrator::MaxCalibrator(int64_t num_bits, std::vector<int64_t> axis, bool is_unsigned, bool track_amax)
    : num_bits_(num_bits), axis_(std::move(axis)), unsigned_(is_unsigned), track_(track_amax) {
  check_num_bits("MaxCalibrator", num_bits);
}

void MaxCalibrator::collect(const at::Tensor& x) {
  torch::NoGradGuard no_grad;
  for (int64_t a : axis_) {
    TORCH_CHECK_VALUE(a >= -x.dim() && a < x.dim(), "MaxCalibrator: axis ", a, " is out of range for x with ",
                      x.dim(), " dimensions");
  }
  // Integer (and bool) data is calibrated as float32, as pytorch-quantization accepts it.
  const at::Tensor xd = at::isIntegralType(x.scalar_type(), /*includeBool=*/true) ? x.detach().to(at::kFloat) : x.detach();
  at::Tensor a = abs_max(xd, axis_);  // refuses NaN/Inf data
  if (track_) amaxs_.push_back(a.cpu().clone());
  if (!amax_.defined()) {
    amax_ = a.clone();
    return;
  }
  TORCH_CHECK(a.sizes() == amax_.sizes(), "MaxCalibrator: amax shape changed! (", amax_.sizes(), " -> ", a.sizes(),
              "): the calibrated tensor's shape along the kept axes must not change between batches");
  amax_ = at::maximum(amax_, a.to(amax_.device()));
}

void MaxCalibrator::reset() {
  amax_ = at::Tensor();
  amaxs_.clear();
}

std::optional<at::Tensor> MaxCalibrator::compute_amax(const AmaxOptions&) {
  if (!amax_.defined()) return std::nullopt;
  return amax_;
}

void MaxCalibrator::set_calib_amax(const at::Tensor& amax) {
  TORCH_CHECK_VALUE(amax.defined() && at::isfinite(amax).all().item<bool>(),
                    "MaxCalibrator: calib_amax must be a finite tensor");
  check_amax("MaxCalibrator::set_calib_amax", amax);  // an abs-max is never negative
  TORCH_CHECK(!amax_.defined() || amax.sizes() == amax_.sizes(), "MaxCalibrator: amax shape changed! (",
              amax_.sizes(), " -> ", amax.sizes(), ")");
  amax_ = amax.detach().to(at::kFloat).clone();
}

}  // namespace calib
}  // namespace torchqat
