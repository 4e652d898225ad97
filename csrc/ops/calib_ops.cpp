// Schema of histogram_abs and the CPU registrations of the calibration statistics. abs_max's
// schema lives with its portable definition (abs_max.cpp); the kernels registered here for CPU
// (and in cuda/ for CUDA) take precedence over that definition on those devices.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "ops/calib_ops_impl.h"
#include "torchqat/calib/stats.h"

TORCH_LIBRARY_FRAGMENT(torchqat, m) {
  m.def("histogram_abs(Tensor x, Tensor(a!) hist, float bin_width, bool skip_zeros=False) -> ()");
}

TORCH_LIBRARY_IMPL(torchqat, CPU, m) {
  using namespace torchqat::detail;
  m.impl("abs_max", &abs_max_impl<abs_max_cpu_kernel>);
  m.impl("histogram_abs", &histogram_abs_impl<histogram_abs_cpu_kernel>);
}

namespace torchqat {

void histogram_abs(const at::Tensor& x, at::Tensor& hist, double bin_width, bool skip_zeros) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchqat::histogram_abs", "")
                       .typed<void(const at::Tensor&, at::Tensor&, double, bool)>();
  op.call(x, hist, bin_width, skip_zeros);
}

}  // namespace torchqat
