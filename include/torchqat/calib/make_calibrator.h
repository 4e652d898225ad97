#pragma once
#include "torchqat/calib/calibrator.h"
#include "torchqat/quant_descriptor.h"

namespace torchqat {
namespace calib {
// The calibrator a descriptor's calib_method names: "max" -> MaxCalibrator over the
// descriptor's axis, "histogram" -> HistogramCalibrator (per tensor only).
CalibratorPtr make_calibrator(const QuantDescriptor& desc);
}  // namespace calib
}  // namespace torchqat
