#pragma once
// The quantization rules shared by the ops, quantizers, calibrators and the exporter, each
// written once (csrc/quantizer/quant_rules.cpp). Python reaches them as torchqat._C.<name>.
#include <ATen/ATen.h>

#include <cstdint>

namespace torchqat {

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
