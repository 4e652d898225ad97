#pragma once
// Plain autograd references for the gradient tests, independent of torchqat's kernels.
#include <torch/torch.h>

#include <cmath>

namespace torchqat_test {

// 8-bit signed fake quant with pytorch-quantization's STE: the forward is ATen's fake-quant kernel
// (test_fake_quant.cpp shows torchqat equal to it bit for bit), the gradient that of clamp(x, -amax,
// amax), 1 inside the closed range and 0 outside. amax: a scalar, or a broadcastable per-channel
// tensor with its channels on `axis`.
inline at::Tensor ste_fake_quant(const at::Tensor& x, const at::Tensor& amax, int64_t axis = -1) {
  const auto a = amax.detach().to(x.scalar_type());
  at::Tensor fq;
  if (axis < 0) {
    fq = at::fake_quantize_per_tensor_affine(x.detach(), a.item<float>() / 127.0f, 0, -128, 127);
  } else {
    const auto flat = a.reshape({-1});
    fq = at::fake_quantize_per_channel_affine(x.detach(), flat / 127.0, torch::zeros({flat.numel()}, torch::kInt),
                                              axis, -128, 127);
  }
  const auto clipped = torch::max(torch::min(x, a), -a);
  return clipped + (fq - clipped).detach();
}

// LSQ (Esser et al. 2020) written out: y = clamp(x / s rounded with a straight-through round, qmin,
// bound) * s, s = amax / bound. torchqat scales the amax gradient of this by lsq_grad_scale.
inline at::Tensor lsq_fake_quant(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits = 8,
                                 bool is_unsigned = false, bool narrow = false) {
  const double bound = is_unsigned ? std::pow(2.0, num_bits) - 1 : std::pow(2.0, num_bits - 1) - 1;
  const double qmin = is_unsigned ? 0.0 : (narrow ? -bound : -bound - 1);
  const auto step = amax / bound;
  const auto v = x / step;
  const auto q = v + (torch::round(v) - v).detach();
  return torch::clamp(q, qmin, bound) * step;
}

// LSQ's gradient scale 1 / sqrt(n * bound), n = LSQ's N_F: the elements one amax entry covers in
// one sample (dim 0 of x is the batch unless amax varies along dim 0).
inline double lsq_grad_scale(int64_t n, int64_t num_bits = 8, bool is_unsigned = false) {
  const double bound = is_unsigned ? std::pow(2.0, num_bits) - 1 : std::pow(2.0, num_bits - 1) - 1;
  return 1.0 / std::sqrt(static_cast<double>(n) * bound);
}

}  // namespace torchqat_test
