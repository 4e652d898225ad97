#pragma once
// The one definition of the fake-quant arithmetic, shared by the CPU and CUDA kernels.
// It follows torch's fake_quantize_per_*_affine kernels operation for operation
// (step = amax/bound, inv = 1/step, q = clamp(nearbyint(x*inv)), y = q*step), so results are
// bit-identical to torch's in fp32; mathematically this is DESIGN.md's scale = bound/amax.
#include <c10/macros/Macros.h>
#include <cmath>

namespace torchqat {
namespace detail {

// Each operation rounded on its own, as the CPU kernels do them. nvcc contracts a product that
// feeds an add or subtract into one FMA (one rounding, even when the product has other uses),
// which would make dstep_one differ from the CPU in the last bit; its __f*_rn intrinsics are
// never contracted, and keep IEEE division under --use_fast_math too.
C10_HOST_DEVICE inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
C10_HOST_DEVICE inline double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
C10_HOST_DEVICE inline float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
C10_HOST_DEVICE inline float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

struct Step {
  float step;  // amax / bound; 0 when the channel quantizes to zero
  float inv;   // 1 / step; 0 when the channel quantizes to zero
};

// amax == 0 (-0 included: its inverse is -inf), or an amax so small that 1/step overflows,
// quantizes the channel to 0 (never NaN).
C10_HOST_DEVICE inline Step make_step(float amax, float bound) {
  float step = div_rn(amax, bound);
  float inv = div_rn(1.0f, step);
  if (!(amax > 0.0f) || !(inv < INFINITY)) return {0.0f, 0.0f};
  return {step, inv};
}

// Clamp that keeps NaN (comparisons with NaN are false), so a NaN input stays visible.
C10_HOST_DEVICE inline float clampq(float q, float qmin, float qmax) {
  return q < qmin ? qmin : (q > qmax ? qmax : q);
}

C10_HOST_DEVICE inline float fake_quant_one(float x, Step s, float qmin, float qmax) {
  return mul_rn(clampq(::nearbyintf(mul_rn(x, s.inv)), qmin, qmax), s.step);
}

// float64 keeps double precision for the product, as torch's CPU kernel does. The clamp is exact
// in float: |q| <= 2^16 after it (num_bits <= 16), and NaN stays NaN.
C10_HOST_DEVICE inline double fake_quant_one(double x, Step s, float qmin, float qmax) {
  const double q = ::nearbyint(mul_rn(x, static_cast<double>(s.inv)));
  return mul_rn(static_cast<double>(clampq(static_cast<float>(q), qmin, qmax)), static_cast<double>(s.step));
}

// The type an element is computed in: double for float64, float for every other dtype
// (float16/bfloat16 widen to float exactly).
template <typename T>
struct Compute {
  using type = float;
};
template <>
struct Compute<double> {
  using type = double;
};

// The STE mask |x| <= amax, compared in the element's compute type.
template <typename A>
C10_HOST_DEVICE inline bool in_range(A x, float amax) {
  return x <= static_cast<A>(amax) && x >= -static_cast<A>(amax);
}

// d y / d step for LSQ: the exact derivative of the forward almost everywhere.
C10_HOST_DEVICE inline float dstep_one(float x, Step s, float qmin, float qmax) {
  float v = mul_rn(x, s.inv);
  float q = ::nearbyintf(v);
  if (q < qmin) return qmin;
  if (q > qmax) return qmax;
  return sub_rn(q, v);
}

}  // namespace detail
}  // namespace torchqat
