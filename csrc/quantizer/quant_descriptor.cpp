#include "torchqat/quant_descriptor.h"

#include <c10/util/Exception.h>

#include "torchqat/quant_rules.h"

#include <cmath>
#include <sstream>

namespace torchqat {

void QuantDescriptor::validate() const {
  TORCH_CHECK_VALUE(!(is_e4m3() && is_unsigned_),
                    "QuantDescriptor: num_bits=(4, 3) (FP8 E4M3) is a signed format: is_unsigned must be false");
  check_num_bits("QuantDescriptor", num_bits_);
  TORCH_CHECK_VALUE(calib_method_ == "max" || calib_method_ == "histogram",
                    "QuantDescriptor: calib_method must be 'max' or 'histogram', got '", calib_method_, "'");
  if (amax_) {
    TORCH_CHECK_VALUE(!amax_->empty(), "QuantDescriptor: amax is empty");
    for (float a : *amax_) {
      TORCH_CHECK_VALUE(std::isfinite(a) && a >= 0.0f, "QuantDescriptor: amax must be finite and >= 0, got ", a);
    }
  }
  if (scale_amax_) {
    TORCH_CHECK_VALUE(*scale_amax_ > 0.0 && std::isfinite(*scale_amax_),
                      "QuantDescriptor: scale_amax must be > 0, got ", *scale_amax_);
  }
  if (axis_) {
    TORCH_CHECK_VALUE(!axis_->empty(), "QuantDescriptor: axis is an empty list; use std::nullopt for per tensor");
  }
}

std::string QuantDescriptor::str() const {
  std::ostringstream s;
  s << "QuantDescriptor(";
  if (is_e4m3()) s << "e4m3";
  else s << num_bits_ << "bit";
  s << (fake_quant_ ? " fake" : " real");
  if (!axis_) {
    s << " per-tensor";
  } else {
    s << " axis=";
    for (size_t i = 0; i < axis_->size(); ++i) s << (i ? "," : "") << (*axis_)[i];
  }
  if (learn_amax_) s << " learn_amax";
  if (is_unsigned_) s << " unsigned";
  if (narrow_range_) s << " narrow";
  if (calib_method_ != "max") s << " calib=" << calib_method_;
  s << ")";
  return s.str();
}

bool QuantDescriptor::operator==(const QuantDescriptor& o) const {
  return num_bits_ == o.num_bits_ && format_ == o.format_ && axis_ == o.axis_ && amax_ == o.amax_ && learn_amax_ == o.learn_amax_ &&
         scale_amax_ == o.scale_amax_ && calib_method_ == o.calib_method_ && is_unsigned_ == o.is_unsigned_ &&
         narrow_range_ == o.narrow_range_ && fake_quant_ == o.fake_quant_ && name_ == o.name_;
}

QuantDescriptor quant_desc_8bit_per_tensor() { return QuantDescriptor(); }
QuantDescriptor quant_desc_unsigned_8bit_per_tensor() { return QuantDescriptor().is_unsigned(true); }
QuantDescriptor quant_desc_8bit_weight_per_channel() { return QuantDescriptor().axis(std::vector<int64_t>{0}); }
QuantDescriptor quant_desc_e4m3_per_tensor() { return QuantDescriptor().format(QuantFormat::kE4M3); }
QuantDescriptor quant_desc_8bit_convtranspose_weight_per_channel() {
  return QuantDescriptor().axis(std::vector<int64_t>{1});
}

}  // namespace torchqat
