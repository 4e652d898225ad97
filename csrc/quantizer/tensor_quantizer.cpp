#include "torchqat/tensor_quantizer.h"

#include <torch/torch.h>

#include "torchqat/calib/make_calibrator.h"
#include "torchqat/ops.h"
#include "torchqat/quant_rules.h"
#include "nn/output_hooks.h"
#include "quantizer/call_observer.h"

namespace torchqat {

namespace detail {
const QuantizerCallObserver*& quantizer_call_observer() {
  static thread_local const QuantizerCallObserver* observer = nullptr;
  return observer;
}
}  // namespace detail

TensorQuantizerImpl::TensorQuantizerImpl(QuantDescriptor desc) : desc_(std::move(desc)) {
  desc_.validate();
  reset();
}

void TensorQuantizerImpl::reset() {
  at::Tensor init;
  // Cloneable::clone() copy-constructs, drops the copy's buffers and parameters and calls reset():
  // an amax set after construction (set_amax, load_calib_amax, a checkpoint) is then still held in
  // amax_ but registered nowhere. Registering it again gives the copy the original's buffers (clone
  // then copies their values); an explicit reset() still returns to the descriptor's state.
  const bool cloning = amax_.defined() && !named_buffers(/*recurse=*/false).contains("_amax") &&
                       !named_parameters(/*recurse=*/false).contains("_amax");
  if (cloning) {
    init = amax_.detach().clone();
  } else if (desc_.amax()) {
    const auto& v = *desc_.amax();
    init = v.size() == 1 ? torch::tensor(v[0]) : torch::tensor(v);
  } else if (desc_.learn_amax()) {
    init = torch::tensor(1.0f);  // a starting value; calibration normally overwrites it
  }
  amax_ = at::Tensor();
  if (init.defined()) set_amax(init);
}

std::string TensorQuantizerImpl::display_name() const {
  return desc_.name().empty() ? std::string("TensorQuantizer") : "TensorQuantizer '" + desc_.name() + "'";
}

void TensorQuantizerImpl::enable_calib() {
  if (!calibrator_) calibrator_ = calib::make_calibrator(desc_);
  if_calib_ = true;
}

void TensorQuantizerImpl::set_amax(const at::Tensor& value) {
  TORCH_CHECK_VALUE(value.defined() && value.numel() > 0, display_name(), ": amax must be a non-empty tensor");
  at::Tensor v = value.detach().to(at::kFloat);
  check_amax(display_name().c_str(), v);
  if (!amax_.defined()) {
    amax_ = desc_.learn_amax() ? register_parameter("_amax", v.clone()) : register_buffer("_amax", v.clone());
    return;
  }
  TORCH_CHECK(v.sizes() == amax_.sizes(), display_name(), ": changing the shape of amax is not allowed (",
              amax_.sizes(), " -> ", v.sizes(), ")");
  torch::NoGradGuard no_grad;
  amax_.copy_(v);
}

void TensorQuantizerImpl::load_calib_amax(const calib::AmaxOptions& opts, bool strict) {
  TORCH_CHECK(calibrator_ != nullptr, display_name(), ": no calibrator to load amax from");
  auto a = calibrator_->compute_amax(opts);
  if (!a) {
    TORCH_CHECK(!strict, display_name(), ": calibrator ", calibrator_->name(),
                " has not seen any tensor; run data through the model in calib mode first, or pass strict=false");
    TORCH_WARN(display_name(), ": calibrator has not seen any tensor; amax left unchanged");
    return;
  }
  set_amax(*a);
}

int64_t TensorQuantizerImpl::maxbound() const {
  if (desc_.is_e4m3()) return 448;
  return quant_bound(desc_.num_bits(), desc_.is_unsigned());
}

at::Tensor TensorQuantizerImpl::step_size() const {
  TORCH_CHECK(amax_.defined(), display_name(), ": step_size is undefined without amax (dynamic mode)");
  return amax_ / static_cast<double>(maxbound());
}

at::Tensor TensorQuantizerImpl::current_amax(const at::Tensor& x) const {
  at::Tensor a;
  if (amax_.defined()) {
    a = amax_;
  } else {
    std::vector<int64_t> keep;
    if (desc_.axis()) {
      for (int64_t d : *desc_.axis()) keep.push_back(d < 0 ? d + x.dim() : d);
    }
    a = abs_max(x.detach(), keep);
  }
  if (desc_.scale_amax()) a = a * *desc_.scale_amax();
  return a;
}

// The one axis a per-channel amax belongs to, passed to the op (multi-axis amax must be
// broadcast-shaped and is rejected by the op).
static std::optional<int64_t> single_axis(const QuantDescriptor& d, const at::Tensor& x) {
  if (!d.axis() || d.axis()->size() != 1) return std::nullopt;
  const int64_t a = (*d.axis())[0];
  TORCH_CHECK_VALUE(a >= -x.dim() && a < x.dim(), "TensorQuantizer: descriptor axis ", a,
                    " is out of range for an input with ", x.dim(), " dimensions");
  return a < 0 ? a + x.dim() : a;
}

at::Tensor TensorQuantizerImpl::forward(const at::Tensor& x) {
  if (const auto* observe = detail::quantizer_call_observer()) (*observe)(*this, x);
  const auto quantize_or_pass = [&]() -> at::Tensor {
    if (disabled_) return x;
    if (if_calib_) {
      torch::NoGradGuard no_grad;
      calibrator_->collect(x.detach());
    }
    if (!if_quant_) return x;
    const at::Tensor a = current_amax(x);
    const auto axis = a.numel() > 1 ? single_axis(desc_, x) : std::nullopt;
    // FP8 E4M3 is always fake (the quantized values are floats), as pytorch-quantization's scaled_e4m3.
    if (desc_.is_e4m3()) return fake_quant_e4m3(x, a, axis);
    if (desc_.fake_quant()) {
      return fake_quant(x, a, desc_.num_bits(), desc_.is_unsigned(), desc_.narrow_range(), axis);
    }
    auto [q, step] = quantize(x, a, desc_.num_bits(), desc_.is_unsigned(), desc_.narrow_range(), axis);
    return q.to(x.scalar_type());
  };
  at::Tensor y = quantize_or_pass();
  nn::detail::notify_output(*this, y);  // FeatureDistillationLoss may supervise a quantizer, as in Python
  return y;
}

void TensorQuantizerImpl::pretty_print(std::ostream& s) const {
  s << "torchqat::TensorQuantizer(" << desc_.str();
  if (disabled_) s << " disabled";
  if (amax_.defined()) {
    if (amax_.numel() == 1) s << " amax=" << amax_.item<float>();
    else s << " amax=[" << amax_.min().item<float>() << ", " << amax_.max().item<float>() << "](" << amax_.numel() << ")";
  } else {
    s << " amax=dynamic";
  }
  if (if_quant_) s << " quant";
  if (if_calib_) s << " calib";
  s << ")";
}

}  // namespace torchqat
