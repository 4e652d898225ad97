#pragma once
// The one definition of the fake-quant arithmetic, shared by the CPU and CUDA kernels.
// It follows torch's fake_quantize_per_*_affine kernels operation for operation
// (step = amax/bound, inv = 1/step, q = clamp(nearbyint(x*inv)), y = q*step), so results are
// bit-identical to torch's in fp32; mathematically this is DESIGN.md's scale = bound/amax.
#include <c10/macros/Macros.h>
#include <cmath>

namespace torchqat {
namespace detail {

struct Step {
  float step;  // amax / bound; 0 when the channel quantizes to zero
  float inv;   // 1 / step; 0 when the channel quantizes to zero
};

// amax == 0 (-0 included: its inverse is -inf), or an amax so small that 1/step overflows,
// quantizes the channel to 0 (never NaN).
C10_HOST_DEVICE inline Step make_step(float amax, float bound) {
  float step = amax / bound;
  float inv = 1.0f / step;
  if (!(amax > 0.0f) || !(inv < INFINITY)) return {0.0f, 0.0f};
  return {step, inv};
}

// Clamp that keeps NaN (comparisons with NaN are false), so a NaN input stays visible.
C10_HOST_DEVICE inline float clampq(float q, float qmin, float qmax) {
  return q < qmin ? qmin : (q > qmax ? qmax : q);
}

C10_HOST_DEVICE inline float fake_quant_one(float x, Step s, float qmin, float qmax) {
  return clampq(::nearbyintf(x * s.inv), qmin, qmax) * s.step;
}

// d y / d step for LSQ: the exact derivative of the forward almost everywhere.
C10_HOST_DEVICE inline float dstep_one(float x, Step s, float qmin, float qmax) {
  float v = x * s.inv;
  float q = ::nearbyintf(v);
  if (q < qmin) return qmin;
  if (q > qmax) return qmax;
  return q - v;
}

}  // namespace detail
}  // namespace torchqat
