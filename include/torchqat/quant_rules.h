#pragma once
// The quantization rules shared by the ops, quantizers, calibrators and the exporter, each
// written once (csrc/quantizer/quant_rules.cpp). Python reaches them as torchqat._C.<name>.
// `what` is the caller's name (an op such as "torchqat.fake_quant", a class such as
// "MaxCalibrator"); errors start with it.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace torchqat {

// The integer formats' bit widths.
constexpr int64_t kMinNumBits = 2;
constexpr int64_t kMaxNumBits = 16;

// Throws c10::ValueError "<what>: num_bits must be in [2, 16], got <num_bits>" outside that range.
void check_num_bits(const char* what, int64_t num_bits);

// The largest grid value (and the scale's divisor): 2^(b-1)-1 signed, 2^b-1 unsigned (checks num_bits).
int64_t quant_bound(int64_t num_bits, bool is_unsigned);

// The smallest grid value: 0 unsigned, -bound with narrow_range, else -bound-1.
int64_t quant_min(int64_t num_bits, bool is_unsigned, bool narrow_range);

// Throws c10::ValueError unless every amax is finite and >= 0: "<what>: amax must be finite, got NaN
// (amax shape [..])" (or Inf), "<what>: amax must be >= 0, got <min>". An empty amax passes. One
// reduction and one host copy (a device sync on CUDA) on the valid path.
void check_amax(const char* what, const at::Tensor& amax);

// The dims of a broadcast-shaped amax (pytorch-quantization keeps weight amax as [K,1,1,1]) that
// are not 1: the axes of x it varies along, which an amax without an axis argument belongs to
// (none: one amax; one: per channel; several: an amax over several axes). Sizes may be symbolic.
std::vector<int64_t> amax_axes(c10::SymIntArrayRef amax_sizes);

// ONNX QuantizeLinear's scale of an amax: amax / bound in float32 on the CPU, where a scale below
// the smallest normal float32 (amax 0, or so small that the step is subnormal) is zero_scale.
at::Tensor qdq_scale(const at::Tensor& amax, double bound, float zero_scale);

// LSQ's N (Esser et al. 2020, N_F): the elements of one sample that one amax entry covers, the
// count in the amax gradient's scale 1 / sqrt(N * bound). Dim 0 of x is the batch unless amax
// varies along dim 0 (amax_along_dim0: a per-channel weight along axis 0, whose dim 0 is the
// output channel), so N = x.numel() / amax_numel, divided by x.size(0) unless amax_along_dim0;
// at least 1 (empty x, 0-d x). A batch-independent N makes DDP training equal to one process:
// each rank's scale is the one-process scale, and the summed gradient is additive over samples.
// The op cannot tell a weight from an activation: a weight with a learned amax per tensor, or per
// channel along another axis (ConvTranspose weights, axis 1), counts its dim 0 as a batch too, so
// its N is numel / size(0) rather than LSQ's N_W (every element); an axis-0 weight gets N_W.
int64_t lsq_sample_count(at::IntArrayRef x_sizes, int64_t amax_numel, bool amax_along_dim0);

// The factor the summed d y / d step of each amax entry is multiplied by to give d y / d amax:
// LSQ's 1 / sqrt(N * bound) (N = lsq_sample_count) times d step / d amax = 1 / bound.
double lsq_amax_grad_scale(int64_t sample_count, double bound);

}  // namespace torchqat
