#include "torchqat/calib/make_calibrator.h"

#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calib/max_calibrator.h"

namespace torchqat {
namespace calib {

CalibratorPtr make_calibrator(const QuantDescriptor& desc) {
  if (desc.calib_method() == "histogram") {
    TORCH_CHECK_VALUE(!desc.axis(), "HistogramCalibrator is per tensor only; descriptor ", desc.str(),
                      " has an axis (use calib_method='max' for per-channel quantizers)");
    return std::make_shared<HistogramCalibrator>(desc.num_bits(), std::nullopt, desc.is_unsigned(), 2048, false,
                                                 desc.format());
  }
  return std::make_shared<MaxCalibrator>(desc.num_bits(), desc.axis().value_or(std::vector<int64_t>{}),
                                         desc.is_unsigned());
}

}  // namespace calib
}  // namespace torchqat
