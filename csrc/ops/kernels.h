#pragma once
// Per-device kernels of the fake-quant family. The op layer (fake_quant.cpp) has already
// validated the arguments and made x dense; kernels walk memory order, where the channel of
// offset o is (o / inner) % channels.
#include <ATen/ATen.h>

#include "ops/quant_layout.h"

namespace torchqat {
namespace detail {

struct KernelArgs {
  const Layout& L;
  QuantRange r;
  Format fmt = Format::kInt;
};

// out = fake_quant(x); out has x's strides.
void fake_quant_cpu_kernel(const KernelArgs& a, at::Tensor& out);
// grad_x = grad * (|x| <= amax); when dstep is defined also dstep = grad * d y / d step (float32).
void fake_quant_backward_cpu_kernel(const KernelArgs& a, const at::Tensor& grad, at::Tensor& grad_x,
                                    at::Tensor& dstep);
#ifdef TORCHQAT_WITH_CUDA
void fake_quant_cuda_kernel(const KernelArgs& a, at::Tensor& out);
void fake_quant_backward_cuda_kernel(const KernelArgs& a, const at::Tensor& grad, at::Tensor& grad_x,
                                     at::Tensor& dstep);
#endif

}  // namespace detail
}  // namespace torchqat
