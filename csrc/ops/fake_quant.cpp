// Schemas of the fake-quant family and their CPU registration.
#include <torch/library.h>

#include "ops/fake_quant_impl.h"

TORCH_LIBRARY_FRAGMENT(torchqat, m) {
  m.def(
      "fake_quant(Tensor x, Tensor amax, int num_bits=8, bool unsigned=False, bool narrow_range=False, "
      "int? axis=None) -> Tensor");
  m.def(
      "fake_quant_backward(Tensor grad, Tensor x, Tensor amax, int num_bits, bool unsigned, bool narrow_range, "
      "int? axis, bool amax_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torchqat, CPU, m) {
  using namespace torchqat::detail;
  m.impl("fake_quant", &fake_quant_impl<fake_quant_cpu_kernel>);
  m.impl("fake_quant_backward", &fake_quant_backward_impl<fake_quant_backward_cpu_kernel>);
}
