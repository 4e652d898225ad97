// Schemas of the fake-quant family (integer grid and FP8 E4M3) and their CPU registration.
#include <torch/library.h>

#include "ops/fake_quant_impl.h"

TORCH_LIBRARY_FRAGMENT(torchqat, m) {
  m.def(
      "fake_quant(Tensor x, Tensor amax, int num_bits=8, bool unsigned=False, bool narrow_range=False, "
      "int? axis=None) -> Tensor");
  m.def(
      "fake_quant_backward(Tensor grad, Tensor x, Tensor amax, int num_bits, bool unsigned, bool narrow_range, "
      "int? axis, bool amax_grad) -> (Tensor, Tensor)");
  // FP8 E4M3 (pytorch-quantization's num_bits=(4, 3)): y = e4m3(x / step) * step, step = amax / 448,
  // saturating at +-448. A sibling of fake_quant rather than a format argument: its range has no
  // num_bits / unsigned / narrow_range, and fake_quant's schema (and every graph that records it)
  // stays as it is.
  m.def("fake_quant_e4m3(Tensor x, Tensor amax, int? axis=None) -> Tensor");
  m.def(
      "fake_quant_e4m3_backward(Tensor grad, Tensor x, Tensor amax, int? axis, bool amax_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torchqat, CPU, m) {
  using namespace torchqat::detail;
  m.impl("fake_quant", &fake_quant_impl<fake_quant_cpu_kernel>);
  m.impl("fake_quant_backward", &fake_quant_backward_impl<fake_quant_backward_cpu_kernel>);
  m.impl("fake_quant_e4m3", &fake_quant_e4m3_impl<fake_quant_cpu_kernel>);
  m.impl("fake_quant_e4m3_backward", &fake_quant_e4m3_backward_impl<fake_quant_backward_cpu_kernel>);
}
