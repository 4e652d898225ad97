#pragma once
// torchqat's operators, callable from C++. Each goes through the dispatcher, so the CPU or
// CUDA kernel is chosen by the tensors' device and autograd applies; Python reaches the same
// kernels as torch.ops.torchqat.<name>.
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace torchqat {

// Symmetric fake quantization: y = clamp(round_half_even(x / step), qmin, qmax) * step,
// step = amax / bound, bound = 2^(b-1)-1 (signed) or 2^b-1 (unsigned). amax is a 0-d or
// one-element tensor (per tensor), a 1-d tensor of size x.size(axis), or shaped to broadcast
// against x (e.g. [K,1,1,1]). Backward: the STE mask |x| <= amax, and the LSQ gradient for
// amax when amax requires grad: per amax entry, the sum of grad * d y / d step over the elements
// it covers, times 1 / (sqrt(N * bound) * bound), N = lsq_sample_count (quant_rules.h): the
// elements one entry covers in one sample, where dim 0 of x is the batch unless amax varies along
// dim 0. N does not depend on the batch size, so data-parallel ranks get one process's gradient.
at::Tensor fake_quant(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits = 8, bool is_unsigned = false,
                      bool narrow_range = false, std::optional<int64_t> axis = std::nullopt);

// The backward of fake_quant: (grad_x, grad_amax); grad_amax is undefined unless amax_grad.
std::tuple<at::Tensor, at::Tensor> fake_quant_backward(const at::Tensor& grad, const at::Tensor& x,
                                                       const at::Tensor& amax, int64_t num_bits, bool is_unsigned,
                                                       bool narrow_range, std::optional<int64_t> axis,
                                                       bool amax_grad);

// FP8 E4M3 fake quantization (pytorch-quantization's num_bits=(4, 3), scaled_e4m3):
// y = e4m3(x / step) * step, step = amax / 448 (float32), where e4m3 rounds to the nearest
// float8_e4m3fn value (ties to even) and saturates at +-448; NaN stays NaN. This is ONNX
// QuantizeLinear -> DequantizeLinear's arithmetic with scale = step, so an exported model equals
// the fake-quant one bit for bit; it equals torch's `(x / step).to(torch.float8_e4m3fn).float()
// * step` wherever that cast is finite (torch's cast gives NaN from |x / step| >= 464 and for
// Inf; this op gives +-448). Computed in float32 (float64 for float64), output in x's dtype;
// amax as for fake_quant; amax == 0 gives 0. Backward as fake_quant's: the STE mask
// |x| <= amax, and the LSQ amax gradient with 448 as the bound.
at::Tensor fake_quant_e4m3(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis = std::nullopt);

// The backward of fake_quant_e4m3: (grad_x, grad_amax); grad_amax is undefined unless amax_grad.
std::tuple<at::Tensor, at::Tensor> fake_quant_e4m3_backward(const at::Tensor& grad, const at::Tensor& x,
                                                            const at::Tensor& amax, std::optional<int64_t> axis,
                                                            bool amax_grad);

// Real quantization: (q, scale). q is int8/uint8 up to 8 bits, int16/int32 above; scale is
// the step amax / bound (1 where amax is 0), shaped like amax, as ONNX's QuantizeLinear takes it.
std::tuple<at::Tensor, at::Tensor> quantize(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits = 8,
                                            bool is_unsigned = false, bool narrow_range = false,
                                            std::optional<int64_t> axis = std::nullopt);

// q * scale in float32 (or dtype); scale as returned by quantize.
at::Tensor dequantize(const at::Tensor& q, const at::Tensor& scale, std::optional<int64_t> axis = std::nullopt,
                      std::optional<at::ScalarType> dtype = std::nullopt);

// abs-max of x over every dim not in keep_dims, shaped to broadcast against x (keepdim):
// the statistic of max calibration and of dynamic (uncalibrated) quantizers.
at::Tensor abs_max(const at::Tensor& x, at::IntArrayRef keep_dims = {});

// Blocked fake quantization of a 2-d x [out, in]: one amax per block of block_size consecutive
// elements along dim 1, amax of shape [out, in / block_size] (ONNX opset 21's blocked
// QuantizeLinear layout); otherwise as fake_quant (STE, LSQ gradient with N = block_size).
at::Tensor fake_quant_blocked(const at::Tensor& x, const at::Tensor& amax, int64_t block_size, int64_t num_bits = 8,
                              bool is_unsigned = false, bool narrow_range = false);

// abs-max of each block of fake_quant_blocked's layout: [out, in / block_size], float32.
at::Tensor abs_max_blocked(const at::Tensor& x, int64_t block_size);

// Clip with broadcasting bounds: max(min(x, max), min) (so min wins where min > max), in x's
// dtype and shape; min and max broadcast to x. Backward (PACT): dx = grad where min < x < max;
// d min = sum of grad where x <= min, d max = sum of grad where x >= max, each summed to the
// bound's shape, for the bounds that require grad.
at::Tensor clip(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max);

// The backward of clip: (grad_x, grad_min, grad_max); grad_min / grad_max are undefined unless
// min_grad / max_grad.
std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_backward(const at::Tensor& grad, const at::Tensor& x,
                                                             const at::Tensor& min, const at::Tensor& max,
                                                             bool min_grad, bool max_grad);

}  // namespace torchqat
