#pragma once
// The one definition of the fake-quant arithmetic, shared by the CPU and CUDA kernels.
// It follows torch's fake_quantize_per_*_affine kernels operation for operation
// (step = amax/bound, inv = 1/step, q = clamp(nearbyint(x*inv)), y = q*step), so results are
// bit-identical to torch's in fp32; mathematically this is DESIGN.md's scale = bound/amax.
#include <c10/macros/Macros.h>
#include <c10/util/floating_point_utils.h>

#include <cmath>
#include <cstdint>

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

// ---- FP8 E4M3 (float8_e4m3fn: 4 exponent bits, bias 7, 3 mantissa bits, no Inf) ----------
// y = e4m3(x / step) * step with step = amax / 448 in float32: ONNX QuantizeLinear /
// DequantizeLinear's arithmetic with the exported scale, so the fake-quant model and its ONNX
// export agree bit for bit. (pytorch-quantization's scaled_e4m3 writes it x * s, q / s with
// s = 448 / amax: the same quantized values but for rare ties, outputs up to 1 ulp apart.)
constexpr float kE4M3Max = 448.0f;

// Step.step = amax / 448; 0 (the channel quantizes to zero) for amax 0, or an amax so small that
// the step is not a normal float32 (the exporter writes such scales as 2^-24, symbolic.py).
// Step.inv is unused.
C10_HOST_DEVICE inline Step make_e4m3_step(float amax) {
  const float step = div_rn(amax, kE4M3Max);
  if (!(step >= 0x1p-126f)) return {0.0f, 0.0f};
  return {step, 0.0f};
}

// The nearest float8_e4m3fn value of v, ties to even, saturating at +-448 (torch's own cast
// turns |v| >= 464 and Inf into NaN; this follows CUDA's __nv_fp8_e4m3 SATFINITE conversion and
// ONNX QuantizeLinear's saturate=1); NaN stays NaN, -0 stays -0.
C10_HOST_DEVICE inline float round_e4m3(float v) {
  if (v != v) return v;
  const float a = clampq(v, -kE4M3Max, kE4M3Max);
  if (::fabsf(a) < 0.015625f) {
    // Below the smallest normal (2^-6) the grid is uniform, 2^-9 apart; both scalings are exact.
    return mul_rn(::nearbyintf(mul_rn(a, 512.0f)), 0.001953125f);
  }
  // Round the fp32 mantissa to 3 bits, ties to even; a carry moves into the exponent.
  uint32_t b = c10::detail::fp32_to_bits(a);
  b += 0x7FFFFu + ((b >> 20) & 1u);
  return c10::detail::fp32_from_bits(b & 0xFFF00000u);
}

// A zero channel gives 0 (NaN stays NaN), as the integer formats do.
C10_HOST_DEVICE inline float fake_e4m3_one(float x, Step s) {
  if (s.step == 0.0f) return mul_rn(x, 0.0f);
  return mul_rn(round_e4m3(div_rn(x, s.step)), s.step);
}

// float64: the division in double, rounded to float before the cast (as torch casts double to
// float8), the product in double.
C10_HOST_DEVICE inline double fake_e4m3_one(double x, Step s) {
  if (s.step == 0.0f) return mul_rn(x, 0.0);
  const double step = static_cast<double>(s.step);
#ifdef __CUDA_ARCH__
  const double v = __ddiv_rn(x, step);
#else
  const double v = x / step;
#endif
  return mul_rn(static_cast<double>(round_e4m3(static_cast<float>(v))), step);
}

// d y / d step under the STE: q - v inside the range, the saturated value outside, as
// dstep_one for the integer grid (0 for a zero channel).
C10_HOST_DEVICE inline float dstep_e4m3(float x, Step s) {
  if (s.step == 0.0f) return 0.0f;
  const float v = div_rn(x, s.step);
  const float q = round_e4m3(v);
  if (v < -kE4M3Max || v > kE4M3Max) return q;
  return sub_rn(q, v);
}

// The per-format element rules the kernels are instantiated with.
struct IntFormat {
  static C10_HOST_DEVICE Step make(float amax, float bound) { return make_step(amax, bound); }
  template <typename A>
  static C10_HOST_DEVICE A one(A x, Step s, float qmin, float qmax) {
    return fake_quant_one(x, s, qmin, qmax);
  }
  static C10_HOST_DEVICE float dstep(float x, Step s, float qmin, float qmax) { return dstep_one(x, s, qmin, qmax); }
};

struct E4M3Format {
  static C10_HOST_DEVICE Step make(float amax, float /*bound*/) { return make_e4m3_step(amax); }
  template <typename A>
  static C10_HOST_DEVICE A one(A x, Step s, float /*qmin*/, float /*qmax*/) {
    return fake_e4m3_one(x, s);
  }
  static C10_HOST_DEVICE float dstep(float x, Step s, float /*qmin*/, float /*qmax*/) { return dstep_e4m3(x, s); }
};

}  // namespace detail
}  // namespace torchqat
