#pragma once
// Umbrella header of torchqat's C++ API.
#include "torchqat/build_info.h"
#include "torchqat/calib/calibrator.h"
#include "torchqat/checks.h"
#include "torchqat/ops.h"
#include "torchqat/quant_descriptor.h"
#include "torchqat/tensor_quantizer.h"
