// libFuzzer harness on torchqat's C++ boundary: the operators (fake_quant and its autograd
// backward, fake_quant_backward, quantize, dequantize, abs_max), the TensorQuantizer module and
// the calibrators. The fuzz input is decoded into a tensor (0..4 dims, small sizes; float,
// half, bfloat16, double and a few invalid dtypes; transposed, sliced, expanded and
// channels-last views), an amax (0-d, per channel, broadcast-shaped or of a wrong shape, with
// 0, NaN, Inf, negative and denormal values), an axis (also out of range), num_bits (also out
// of range) and the unsigned / narrow flags.
//
// Outcomes: a c10::Error is the expected answer to bad input. Anything else -- a crash, a
// sanitizer report, another exception type, or a broken invariant below -- aborts the run:
//   * an op that succeeds on invalid arguments (num_bits outside [2, 16], non-finite or
//     negative amax) is a failure: those must raise;
//   * outputs keep x's shape (and dtype for fake_quant);
//   * finite x and a valid amax give a finite output (amax small enough that the top
//     quantization level fits in x's dtype);
//   * sampled elements of the CPU result equal a scalar reference written from DESIGN.md's
//     formula, bit for bit (NaN matches NaN);
//   * the STE gradient is the incoming gradient inside [-amax, amax] and 0 outside;
//   * dequantize(quantize(x)) == fake_quant(x) for finite fp32 x; q lies in [qmin, qmax];
//   * abs_max equals max |x| over the reduced dims.
#include <fuzzer/FuzzedDataProvider.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "torchqat/calib/amax_search.h"
#include "torchqat/calib/histogram_calibrator.h"
#include "torchqat/calib/make_calibrator.h"
#include "torchqat/calib/max_calibrator.h"
#include "torchqat/ops.h"
#include "torchqat/tensor_quantizer.h"

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "\n==torchqat fuzz== INVARIANT VIOLATED: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

#define FUZZ_CHECK(cond, ...)                                          \
  do {                                                                 \
    if (!(cond)) fail(c10::str(#cond, ": ", __VA_ARGS__));             \
  } while (0)

// Runs f; a c10::Error is an expected outcome (returns false), other exceptions are failures.
template <typename F>
bool attempt(const char* what, F&& f) {
  try {
    f();
    return true;
  } catch (const c10::Error&) {
    return false;
  } catch (const std::exception& e) {
    fail(c10::str(what, " threw a non-c10 exception: ", e.what()));
  }
}

const float kPalette[] = {
    0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -0.5f, 1.5f, -2.5f, 126.5f, -127.5f, 128.5f, 255.5f, 3.0f,
    std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(), FLT_MIN / 4, FLT_MIN,
    1e-30f, 1e-6f, 65504.0f, -65504.0f, 65520.0f, 1e6f, 3e38f, FLT_MAX, -FLT_MAX, INFINITY, -INFINITY, NAN, -NAN};
constexpr size_t kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);

float any_float(FuzzedDataProvider& p) {
  switch (p.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return kPalette[p.ConsumeIntegralInRange<size_t>(0, kPaletteSize - 1)];
    case 1: {
      const uint32_t bits = p.ConsumeIntegral<uint32_t>();
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
    default:
      return p.ConsumeFloatingPointInRange<float>(-8.0f, 8.0f);
  }
}

at::ScalarType pick_dtype(FuzzedDataProvider& p, bool allow_invalid) {
  static const at::ScalarType valid[] = {at::kFloat, at::kFloat, at::kHalf, at::kBFloat16, at::kDouble};
  static const at::ScalarType invalid[] = {at::kInt, at::kChar, at::kBool, at::kLong, at::kComplexFloat};
  if (allow_invalid && p.ConsumeIntegralInRange<int>(0, 15) == 0) {
    return invalid[p.ConsumeIntegralInRange<size_t>(0, 4)];
  }
  return valid[p.ConsumeIntegralInRange<size_t>(0, 4)];
}

at::Generator generator(FuzzedDataProvider& p) { return at::detail::createCPUGenerator(p.ConsumeIntegral<uint32_t>()); }

// Values of a tensor of `shape`: seeded normal noise scaled by a fuzzed factor, with up to 8
// fuzzed special values written over it.
at::Tensor make_values(FuzzedDataProvider& p, at::IntArrayRef shape, at::ScalarType dtype) {
  at::Tensor t = at::randn(shape, generator(p), at::TensorOptions(at::kFloat));
  const float scale = std::ldexp(1.0f, p.ConsumeIntegralInRange<int>(-10, 10));
  t.mul_(scale);
  const int64_t n = t.numel();
  if (n > 0) {
    float* d = t.data_ptr<float>();
    const int specials = p.ConsumeIntegralInRange<int>(0, 8);
    for (int i = 0; i < specials; ++i) d[p.ConsumeIntegralInRange<int64_t>(0, n - 1)] = any_float(p);
  }
  if (at::isIntegralType(dtype, /*includeBool=*/true)) {
    return at::nan_to_num(t, 0.0, 100.0, -100.0).clamp(-100, 100).to(dtype);
  }
  return t.to(dtype);
}

std::vector<int64_t> pick_shape(FuzzedDataProvider& p, int64_t max_dim, int64_t max_size) {
  const int64_t dims = p.ConsumeIntegralInRange<int64_t>(0, max_dim);
  const bool allow_empty = p.ConsumeIntegralInRange<int>(0, 9) == 0;
  std::vector<int64_t> s;
  for (int64_t d = 0; d < dims; ++d) s.push_back(p.ConsumeIntegralInRange<int64_t>(allow_empty ? 0 : 1, max_size));
  return s;
}

// x of `shape` and `dtype` as one of several memory layouts.
at::Tensor make_input(FuzzedDataProvider& p, const std::vector<int64_t>& shape, at::ScalarType dtype) {
  const int64_t dims = static_cast<int64_t>(shape.size());
  const int layout = p.ConsumeIntegralInRange<int>(0, 5);
  if (dims >= 2 && layout == 1) {  // transpose: the base holds two dims swapped
    const int64_t a = p.ConsumeIntegralInRange<int64_t>(0, dims - 1);
    const int64_t b = p.ConsumeIntegralInRange<int64_t>(0, dims - 1);
    auto base_shape = shape;
    std::swap(base_shape[a], base_shape[b]);
    return make_values(p, base_shape, dtype).transpose(a, b);
  }
  if (dims >= 1 && layout == 2) {  // strided slice along one dim: not dense
    const int64_t d = p.ConsumeIntegralInRange<int64_t>(0, dims - 1);
    const int64_t step = p.ConsumeIntegralInRange<int64_t>(1, 3);
    const int64_t start = p.ConsumeIntegralInRange<int64_t>(0, 2);
    auto base_shape = shape;
    base_shape[d] = start + shape[d] * step;
    return make_values(p, base_shape, dtype).slice(d, start, start + shape[d] * step, step);
  }
  if (dims == 4 && layout == 3) {
    return make_values(p, shape, dtype).contiguous(at::MemoryFormat::ChannelsLast);
  }
  if (dims >= 1 && layout == 4) {  // expanded: stride 0, overlapping memory
    const int64_t d = p.ConsumeIntegralInRange<int64_t>(0, dims - 1);
    auto base_shape = shape;
    base_shape[d] = 1;
    return make_values(p, base_shape, dtype).expand(shape);
  }
  if (dims >= 2 && layout == 5) {  // a dense permutation (reversed dims)
    auto base_shape = shape;
    std::reverse(base_shape.begin(), base_shape.end());
    std::vector<int64_t> perm;
    for (int64_t d = dims - 1; d >= 0; --d) perm.push_back(d);
    return make_values(p, base_shape, dtype).permute(perm);
  }
  return make_values(p, shape, dtype);
}

// amax for x: undefined, 0-d, one element, per channel (right or wrong size), broadcast-shaped
// or an arbitrary shape; values mostly positive, with fuzzed specials.
at::Tensor make_amax(FuzzedDataProvider& p, const at::Tensor& x, std::optional<int64_t> axis) {
  const int kind = p.ConsumeIntegralInRange<int>(0, 6);
  const int64_t dims = x.dim();
  int64_t ax = 0;
  if (axis && dims > 0) ax = ((*axis % dims) + dims) % dims;
  else if (dims > 0) ax = p.ConsumeIntegralInRange<int64_t>(0, dims - 1);
  const int64_t k = dims > 0 ? x.size(ax) : 1;
  std::vector<int64_t> shape;
  switch (kind) {
    case 0:
      if (p.ConsumeIntegralInRange<int>(0, 7) == 0) return at::Tensor();
      break;  // 0-d
    case 1: shape = {1}; break;
    case 2: shape = {k}; break;
    case 3: shape = {k + p.ConsumeIntegralInRange<int64_t>(-1, 1)}; break;
    case 4:
      shape.assign(static_cast<size_t>(dims), 1);
      if (dims > 0) shape[static_cast<size_t>(ax)] = k;
      break;
    default: shape = pick_shape(p, 4, 4); break;
  }
  for (auto& s : shape) s = std::max<int64_t>(s, 0);
  at::Tensor a = at::rand(shape, generator(p)).mul_(4.0f).add_(0.05f);
  const int64_t n = a.numel();
  if (n > 0 && p.ConsumeBool()) {
    float* d = a.data_ptr<float>();
    const int specials = p.ConsumeIntegralInRange<int>(1, 3);
    for (int i = 0; i < specials; ++i) d[p.ConsumeIntegralInRange<int64_t>(0, n - 1)] = any_float(p);
  }
  const at::ScalarType dt = p.ConsumeIntegralInRange<int>(0, 9) == 0 ? pick_dtype(p, true) : at::kFloat;
  if (at::isIntegralType(dt, true)) return at::nan_to_num(a, 0.0, 10.0, -10.0).to(dt);
  return a.to(dt);
}

struct Args {
  at::Tensor x, amax;
  int64_t num_bits = 8;
  bool is_unsigned = false, narrow = false;
  std::optional<int64_t> axis;
};

// The operands, for an invariant's failure message.
std::string describe(const Args& a) {
  return c10::str("x ", a.x, " amax ", a.amax, " bits ", a.num_bits, " unsigned ", a.is_unsigned, " narrow ", a.narrow,
                  " axis ", a.axis.value_or(-99));
}

// ---- contract, written from DESIGN.md independently of the kernels ----------------------
struct Range {
  float bound, qmin, qmax;
};
Range contract_range(const Args& a) {
  const float bound = static_cast<float>((int64_t{1} << (a.num_bits - 1 + (a.is_unsigned ? 1 : 0))) - 1);
  return {bound, a.is_unsigned ? 0.0f : (a.narrow ? -bound : -bound - 1.0f), bound};
}

bool amax_valid(const at::Tensor& amax) {
  if (!amax.defined() || amax.numel() == 0) return true;
  const at::Tensor a = amax.detach().to(at::kDouble);
  return at::isfinite(a).all().item<bool>() && a.min().item<double>() >= 0.0;
}

bool all_finite(const at::Tensor& t) {
  return t.numel() == 0 || at::isfinite(t.detach().to(at::kDouble)).all().item<bool>();
}

double dtype_max(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return 65504.0;
    case at::kBFloat16: return 3.3895313892515355e38;
    case at::kFloat: return FLT_MAX;
    default: return DBL_MAX;
  }
}

// The amax of every element of x, flat in x's row-major (logical) order: one amax for all; a
// per-channel amax with an axis along that axis; else a broadcast-shaped amax (one or several
// non-1 dims, each of x's size there) expanded to x's shape.
at::Tensor element_amax(const Args& a) {
  const at::Tensor am = a.amax.detach().to(at::kFloat);
  if (am.numel() == 1) return am.reshape({}).expand(a.x.sizes()).contiguous().reshape({-1});
  if (a.axis) {
    std::vector<int64_t> shape(static_cast<size_t>(a.x.dim()), 1);
    shape[static_cast<size_t>((*a.axis + a.x.dim()) % a.x.dim())] = am.numel();
    return am.reshape(shape).expand(a.x.sizes()).contiguous().reshape({-1});
  }
  return am.expand(a.x.sizes()).contiguous().reshape({-1});
}

// y for one element: step = amax / bound, inv = 1 / step (a channel whose inv overflows
// quantizes to 0), q = clamp(round_half_even(x * inv), qmin, qmax), y = q * step; fp32 math,
// fp64 for double inputs, rounded to x's dtype.
double reference_fake_quant(double xv, float amax, const Range& r, at::ScalarType dt) {
  float step = amax / r.bound;
  float inv = 1.0f / step;
  if (!(amax > 0.0f) || !(inv < INFINITY)) step = inv = 0.0f;  // amax 0 or -0: the channel is zero
  auto clampq = [&](float q) { return q < r.qmin ? r.qmin : (q > r.qmax ? r.qmax : q); };
  if (dt == at::kDouble) {
    const double q = std::nearbyint(xv * static_cast<double>(inv));
    return static_cast<double>(clampq(static_cast<float>(q))) * static_cast<double>(step);
  }
  const float y = clampq(std::nearbyint(static_cast<float>(xv) * inv)) * step;
  return at::scalar_tensor(y, at::kFloat).to(dt).to(at::kDouble).item<double>();
}

bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

void check_fake_quant_result(FuzzedDataProvider& p, const Args& a, const at::Tensor& y) {
  FUZZ_CHECK(a.num_bits >= 2 && a.num_bits <= 16, "fake_quant accepted num_bits ", a.num_bits);
  FUZZ_CHECK(amax_valid(a.amax), "fake_quant accepted amax ", a.amax);
  FUZZ_CHECK(y.sizes() == a.x.sizes(), "fake_quant output shape ", y.sizes(), " != x shape ", a.x.sizes());
  FUZZ_CHECK(y.scalar_type() == a.x.scalar_type(), "fake_quant output dtype ", y.scalar_type(), " != ",
             a.x.scalar_type());
  if (a.x.numel() == 0) return;
  const Range r = contract_range(a);
  const at::Tensor amax_f = a.amax.detach().to(at::kFloat).reshape({-1});
  const double amax_max = amax_f.max().item<float>();
  // The top level (qmin = -bound-1) reaches amax * (bound+1) / bound; if that overflows x's
  // dtype an Inf output is the dtype's limit, not a bug.
  if (all_finite(a.x) && amax_max * (r.bound + 1.0) / r.bound < dtype_max(a.x.scalar_type())) {
    FUZZ_CHECK(all_finite(y), "non-finite output for finite x (dtype ", a.x.scalar_type(), ", amax ",
               amax_f.slice(0, 0, 8), ", num_bits ", a.num_bits, ")");
  }
  const at::Tensor xd = a.x.detach().contiguous().to(at::kDouble).reshape({-1});
  const at::Tensor yd = y.detach().contiguous().to(at::kDouble).reshape({-1});
  const double* xp = xd.data_ptr<double>();
  const double* yp = yd.data_ptr<double>();
  const at::Tensor amax_e = element_amax(a);
  const int samples = p.ConsumeIntegralInRange<int>(1, 6);
  for (int s = 0; s < samples; ++s) {
    const int64_t i = s == 0 ? 0 : p.ConsumeIntegralInRange<int64_t>(0, xd.numel() - 1);
    const float am = amax_e[i].item<float>();
    const double ref = reference_fake_quant(xp[i], am, r, a.x.scalar_type());
    FUZZ_CHECK(same(yp[i], ref), "element ", i, ": x=", xp[i], " amax=", am, " bits=", a.num_bits,
               " unsigned=", a.is_unsigned, " narrow=", a.narrow, " dtype=", a.x.scalar_type(), " got ", yp[i],
               ", reference ", ref);
  }
}

// Autograd: STE gradient for x, LSQ gradient (shape and finiteness) for a learned amax.
void fuzz_autograd(FuzzedDataProvider& p, const Args& a) {
  const bool learn_amax = p.ConsumeBool() && at::isFloatingType(a.amax.scalar_type());
  at::Tensor xg = a.x.detach().clone().requires_grad_(true);
  at::Tensor amg = a.amax.detach().clone().requires_grad_(learn_amax);
  at::Tensor g = make_values(p, a.x.sizes(), a.x.scalar_type());
  std::vector<at::Tensor> inputs{xg};
  if (learn_amax) inputs.push_back(amg);
  std::vector<at::Tensor> grads;
  attempt("fake_quant autograd", [&] {
    at::Tensor y = torchqat::fake_quant(xg, amg, a.num_bits, a.is_unsigned, a.narrow, a.axis);
    grads = torch::autograd::grad({y}, inputs, {g}, /*retain_graph=*/false, /*create_graph=*/false,
                                  /*allow_unused=*/true);
  });
  if (grads.empty()) return;
  const at::Tensor& gx = grads[0];
  FUZZ_CHECK(gx.defined() && gx.sizes() == a.x.sizes(), "grad_x shape");
  if (learn_amax) {
    FUZZ_CHECK(grads[1].defined() && grads[1].sizes() == a.amax.sizes(), "grad_amax shape ",
               grads[1].defined() ? grads[1].sizes() : at::IntArrayRef{}, " != amax shape ", a.amax.sizes());
    // |d y/d step| <= 2^num_bits per element, so the LSQ sum is bounded by sum|g| * 2^num_bits;
    // it is accumulated in float32 and returned in amax's dtype: past either range the true
    // gradient overflows and inf is the right answer.
    const double grad_max = std::min(1e38, dtype_max(a.amax.scalar_type()));
    const bool representable =
        all_finite(g) && g.to(at::kDouble).abs().sum().item<double>() * std::ldexp(1.0, a.num_bits) < grad_max;
    if (all_finite(a.x) && representable && a.x.scalar_type() != at::kHalf) {
      FUZZ_CHECK(all_finite(grads[1]), "non-finite LSQ gradient for finite x and grad: ", describe(a),
                 " grad ", g, " -> grad_amax ", grads[1]);
    }
  }
  if (a.x.numel() == 0) return;
  const at::Tensor xd = a.x.detach().contiguous().to(at::kDouble).reshape({-1});
  const at::Tensor gd = g.contiguous().to(at::kDouble).reshape({-1});
  const at::Tensor gxd = gx.contiguous().to(at::kDouble).reshape({-1});
  const at::Tensor amax_e = element_amax(a);
  for (int s = 0; s < 4; ++s) {
    const int64_t i = p.ConsumeIntegralInRange<int64_t>(0, xd.numel() - 1);
    const float am = amax_e[i].item<float>();
    const float xv = static_cast<float>(xd[i].item<double>());
    const double expect = (xv <= am && xv >= -am) ? gd[i].item<double>() : 0.0;
    FUZZ_CHECK(same(gxd[i].item<double>(), expect), "STE gradient at ", i, ": x=", xv, " amax=", am, " got ",
               gxd[i].item<double>(), ", expected ", expect);
  }
}

// The backward op called directly, with grads of random dtype, layout and (sometimes wrong) shape.
void fuzz_backward_op(FuzzedDataProvider& p, const Args& a) {
  std::vector<int64_t> gshape(a.x.sizes().begin(), a.x.sizes().end());
  if (p.ConsumeIntegralInRange<int>(0, 7) == 0) gshape = pick_shape(p, 4, 5);
  const at::Tensor g = make_input(p, gshape, pick_dtype(p, false));
  const bool amax_grad = p.ConsumeBool();
  attempt("fake_quant_backward", [&] {
    auto [gx, ga] = torchqat::fake_quant_backward(g, a.x, a.amax, a.num_bits, a.is_unsigned, a.narrow, a.axis,
                                                  amax_grad);
    FUZZ_CHECK(a.num_bits >= 2 && a.num_bits <= 16, "fake_quant_backward accepted num_bits ", a.num_bits);
    FUZZ_CHECK(gx.sizes() == a.x.sizes(), "fake_quant_backward grad_x shape");
    FUZZ_CHECK(ga.defined() == amax_grad, "grad_amax defined iff amax_grad");
    if (amax_grad) FUZZ_CHECK(ga.sizes() == a.amax.sizes(), "grad_amax shape");
  });
}

void fuzz_quantize(FuzzedDataProvider& p, const Args& a, const at::Tensor& y_fake) {
  at::Tensor q, scale;
  const bool ok = attempt("quantize", [&] {
    std::tie(q, scale) = torchqat::quantize(a.x, a.amax, a.num_bits, a.is_unsigned, a.narrow, a.axis);
  });
  if (!ok) return;
  FUZZ_CHECK(a.num_bits >= 2 && a.num_bits <= 16, "quantize accepted num_bits ", a.num_bits);
  FUZZ_CHECK(amax_valid(a.amax), "quantize accepted amax ", a.amax);
  FUZZ_CHECK(q.sizes() == a.x.sizes(), "quantize q shape ", q.sizes(), " != ", a.x.sizes());
  FUZZ_CHECK(!at::isFloatingType(q.scalar_type()), "q is not integer: ", q.scalar_type());
  FUZZ_CHECK(scale.sizes() == a.amax.sizes(), "scale shape ", scale.sizes(), " != amax shape ", a.amax.sizes());
  const bool finite_x = all_finite(a.x);
  if (finite_x && q.numel() > 0) {
    const Range r = contract_range(a);
    const at::Tensor qd = q.to(at::kDouble);
    FUZZ_CHECK(qd.min().item<double>() >= r.qmin && qd.max().item<double>() <= r.qmax, "q outside [", r.qmin, ", ",
               r.qmax, "]");
  }
  at::Tensor deq;
  if (!attempt("dequantize", [&] { deq = torchqat::dequantize(q, scale, a.axis); })) {
    fail("dequantize refused quantize's own output");
  }
  FUZZ_CHECK(deq.sizes() == a.x.sizes(), "dequantize shape");
  if (finite_x && a.x.scalar_type() == at::kFloat && y_fake.defined()) {
    FUZZ_CHECK(at::equal(deq, y_fake.contiguous()), "dequantize(quantize(x)) != fake_quant(x) in fp32: ", describe(a),
               " scale ", scale, " q ", q, " deq ", deq, " fake ", y_fake);
  }
}

void fuzz_dequantize(FuzzedDataProvider& p, const Args& a) {
  static const at::ScalarType qtypes[] = {at::kChar, at::kByte, at::kShort, at::kInt, at::kFloat, at::kBool};
  const at::ScalarType qt = qtypes[p.ConsumeIntegralInRange<size_t>(0, 5)];
  const at::Tensor q = make_input(p, std::vector<int64_t>(a.x.sizes().begin(), a.x.sizes().end()), qt);
  std::optional<at::ScalarType> dt;
  if (p.ConsumeBool()) dt = pick_dtype(p, true);
  attempt("dequantize", [&] {
    at::Tensor y = torchqat::dequantize(q, a.amax, a.axis, dt);
    FUZZ_CHECK(!at::isFloatingType(qt) && qt != at::kBool, "dequantize accepted q of dtype ", qt);
    FUZZ_CHECK(amax_valid(a.amax), "dequantize accepted scale ", a.amax);
    FUZZ_CHECK(y.sizes() == q.sizes(), "dequantize shape");
  });
}

void fuzz_abs_max(FuzzedDataProvider& p, const Args& a) {
  std::vector<int64_t> keep;
  const int nkeep = p.ConsumeIntegralInRange<int>(0, 3);
  for (int i = 0; i < nkeep; ++i) keep.push_back(p.ConsumeIntegralInRange<int64_t>(-5, 5));
  at::Tensor m;
  if (!attempt("abs_max", [&] { m = torchqat::abs_max(a.x, keep); })) return;
  FUZZ_CHECK(a.x.numel() > 0, "abs_max accepted an empty x");
  FUZZ_CHECK(all_finite(m), "abs_max returned a non-finite amax: ", m);
  FUZZ_CHECK(all_finite(a.x), "abs_max accepted non-finite x");
  std::vector<bool> kept(static_cast<size_t>(a.x.dim()), false);
  for (int64_t d : keep) kept[static_cast<size_t>((d + a.x.dim()) % a.x.dim())] = true;
  std::vector<int64_t> reduce;
  for (int64_t d = 0; d < a.x.dim(); ++d)
    if (!kept[static_cast<size_t>(d)]) reduce.push_back(d);
  const at::Tensor xa = a.x.detach().to(at::kDouble).abs();
  at::Tensor ref = reduce.empty() ? xa : xa.amax(reduce, /*keepdim=*/true);
  if (keep.empty()) ref = ref.reshape({});
  FUZZ_CHECK(m.numel() == ref.numel(), "abs_max shape ", m.sizes(), " vs ", ref.sizes());
  FUZZ_CHECK(at::equal(m.to(at::kDouble).reshape({-1}), ref.to(at::kFloat).to(at::kDouble).reshape({-1})),
             "abs_max value differs from max |x|");
}

// TensorQuantizer built from a fuzzed descriptor, run on x, with amax set from the fuzzed amax.
void fuzz_tensor_quantizer(FuzzedDataProvider& p, const Args& a) {
  torchqat::QuantDescriptor d;
  d.num_bits(a.num_bits).is_unsigned(a.is_unsigned).narrow_range(a.narrow);
  if (a.axis) d.axis(std::vector<int64_t>{*a.axis});
  if (p.ConsumeBool() && a.amax.defined() && a.amax.numel() > 0 && a.amax.numel() < 16) {
    const at::Tensor af = a.amax.detach().to(at::kFloat).contiguous().reshape({-1});
    d.amax(std::vector<float>(af.data_ptr<float>(), af.data_ptr<float>() + af.numel()));
  }
  d.learn_amax(p.ConsumeIntegralInRange<int>(0, 3) == 0);
  if (p.ConsumeIntegralInRange<int>(0, 3) == 0) d.scale_amax(static_cast<double>(any_float(p)));
  d.fake_quant(p.ConsumeIntegralInRange<int>(0, 3) != 0);
  if (p.ConsumeIntegralInRange<int>(0, 7) == 0) d.calib_method(p.ConsumeBool() ? "histogram" : "kl");
  std::optional<torchqat::TensorQuantizer> tq;
  if (!attempt("TensorQuantizer", [&] { tq.emplace(d); })) return;
  FUZZ_CHECK(d.num_bits() >= 2 && d.num_bits() <= 16, "TensorQuantizer accepted num_bits ", d.num_bits());
  if (p.ConsumeBool()) {
    const bool set = attempt("set_amax", [&] { (*tq)->set_amax(a.amax); });
    if (set) FUZZ_CHECK(amax_valid(a.amax) && a.amax.numel() > 0, "set_amax accepted ", a.amax);
  }
  attempt("TensorQuantizer forward", [&] {
    at::Tensor y = (*tq)->forward(a.x);
    FUZZ_CHECK(y.sizes() == a.x.sizes(), "TensorQuantizer output shape");
  });
}


// A few more batches for a calibrator: x itself, then fuzzed tensors of x's shape (or another
// shape) and a fuzzed scale, so histograms must grow.
std::vector<at::Tensor> calib_batches(FuzzedDataProvider& p, const Args& a) {
  std::vector<at::Tensor> b{a.x};
  const int more = p.ConsumeIntegralInRange<int>(0, 2);
  for (int i = 0; i < more; ++i) {
    std::vector<int64_t> shape(a.x.sizes().begin(), a.x.sizes().end());
    if (p.ConsumeIntegralInRange<int>(0, 3) == 0) shape = pick_shape(p, 4, 5);
    at::Tensor t = make_input(p, shape, a.x.scalar_type());
    if (at::isFloatingType(t.scalar_type())) t = t * std::ldexp(1.0, p.ConsumeIntegralInRange<int>(-30, 30));
    b.push_back(t);
  }
  return b;
}

// What the calibrators take: finite float data, and (as pytorch-quantization's) integer or bool data,
// which they cast to float32 (as_calibrated) before taking |x|.
bool calibratable(const at::Tensor& t) {
  if (!t.defined() || t.numel() == 0) return false;
  if (at::isFloatingType(t.scalar_type())) return all_finite(t);
  return at::isIntegralType(t.scalar_type(), /*includeBool=*/true);
}

at::Tensor as_calibrated(const at::Tensor& t) {
  return at::isIntegralType(t.scalar_type(), /*includeBool=*/true) ? t.detach().to(at::kFloat) : t.detach();
}

void fuzz_max_calibrator(FuzzedDataProvider& p, const Args& a) {
  std::vector<int64_t> axis;
  const int naxis = p.ConsumeIntegralInRange<int>(0, 2);
  for (int i = 0; i < naxis; ++i) axis.push_back(p.ConsumeIntegralInRange<int64_t>(-5, 5));
  std::shared_ptr<torchqat::calib::MaxCalibrator> mc;
  if (!attempt("MaxCalibrator", [&] {
        mc = std::make_shared<torchqat::calib::MaxCalibrator>(a.num_bits, axis, a.is_unsigned, p.ConsumeBool());
      })) {
    return;
  }
  FUZZ_CHECK(a.num_bits >= 2 && a.num_bits <= 16, "MaxCalibrator accepted num_bits ", a.num_bits);
  at::Tensor ref;  // max |x| over the collected batches, over every dim not in axis
  for (const at::Tensor& b : calib_batches(p, a)) {
    const bool ok = attempt("MaxCalibrator::collect", [&] { mc->collect(b); });
    if (!ok) continue;
    FUZZ_CHECK(calibratable(b), "MaxCalibrator collected a non-finite, empty or non-numeric tensor");
    std::vector<bool> kept(static_cast<size_t>(b.dim()), false);
    for (int64_t d : axis) kept[static_cast<size_t>((d + b.dim()) % b.dim())] = true;
    std::vector<int64_t> reduce;
    for (int64_t d = 0; d < b.dim(); ++d)
      if (!kept[static_cast<size_t>(d)]) reduce.push_back(d);
    at::Tensor m = as_calibrated(b).to(at::kDouble).abs();
    if (!reduce.empty()) m = m.amax(reduce, /*keepdim=*/true);
    m = m.to(at::kFloat);
    ref = ref.defined() ? at::maximum(ref.reshape(m.sizes()), m) : m;
  }
  std::optional<at::Tensor> amax;
  attempt("MaxCalibrator::compute_amax", [&] { amax = mc->compute_amax(); });
  FUZZ_CHECK(amax.has_value() == ref.defined(), "MaxCalibrator amax present without data or absent with data");
  if (!amax) return;
  FUZZ_CHECK(amax->numel() == ref.numel(), "MaxCalibrator amax shape ", amax->sizes(), " vs ", ref.sizes());
  FUZZ_CHECK(at::equal(amax->to(at::kFloat).reshape({-1}), ref.reshape({-1})),
             "MaxCalibrator amax differs from the running max |x|");
}

void fuzz_histogram_calibrator(FuzzedDataProvider& p, const Args& a) {
  const int64_t num_bins = p.ConsumeBool() ? 2048 : p.ConsumeIntegralInRange<int64_t>(-2, 4096);
  std::shared_ptr<torchqat::calib::HistogramCalibrator> hc;
  if (!attempt("HistogramCalibrator", [&] {
        hc = std::make_shared<torchqat::calib::HistogramCalibrator>(a.num_bits, std::nullopt, a.is_unsigned,
                                                                     num_bins, p.ConsumeBool());
      })) {
    return;
  }
  FUZZ_CHECK(a.num_bits >= 2 && a.num_bits <= 16, "HistogramCalibrator accepted num_bits ", a.num_bits);
  double seen_max = -1.0;  // max |x| collected; -1: nothing collected
  for (const at::Tensor& b : calib_batches(p, a)) {
    const bool ok = attempt("HistogramCalibrator::collect", [&] { hc->collect(b); });
    // fp64 values beyond float32's range are refused: the histogram and amax are float32.
    const bool valid = calibratable(b) && as_calibrated(b).to(at::kDouble).abs().max().item<double>() <=
                                              static_cast<double>(std::numeric_limits<float>::max());
    if (ok && b.numel() > 0) {
      FUZZ_CHECK(valid, "HistogramCalibrator collected a non-finite, non-numeric or beyond-float32 tensor");
      seen_max = std::max(seen_max, as_calibrated(b).to(at::kDouble).abs().max().item<double>());
    }
    FUZZ_CHECK(ok || !valid, "HistogramCalibrator refused a finite tensor (max |x| = ",
               valid ? as_calibrated(b).to(at::kDouble).abs().max().item<double>() : 0.0, ")");
  }
  static const char* methods[] = {"entropy", "percentile", "mse", "max", ""};
  static const double percentiles[] = {99.99, 100.0, 50.0, 1e-9, 0.0, -1.0, 100.5, NAN, INFINITY};
  for (int m = 0; m < 3; ++m) {
    torchqat::calib::AmaxOptions o;
    o.method = methods[p.ConsumeIntegralInRange<int>(0, 4) == 0 ? p.ConsumeIntegralInRange<int>(3, 4) : m];
    if (p.ConsumeBool()) o.start_bin = p.ConsumeIntegralInRange<int64_t>(-2, 3000);
    if (p.ConsumeBool()) o.stride = p.ConsumeIntegralInRange<int64_t>(-1, 64);
    if (p.ConsumeBool()) o.percentile = percentiles[p.ConsumeIntegralInRange<size_t>(0, 8)];
    std::optional<at::Tensor> amax;
    if (!attempt("HistogramCalibrator::compute_amax", [&] { amax = hc->compute_amax(o); })) continue;
    FUZZ_CHECK(o.method == "entropy" || o.method == "percentile" || o.method == "mse",
               "compute_amax accepted method '", o.method, "'");
    FUZZ_CHECK(amax.has_value() == (seen_max >= 0.0), "HistogramCalibrator amax present iff data was collected");
    if (!amax) continue;
    FUZZ_CHECK(amax->numel() == 1, "HistogramCalibrator amax is not a scalar");
    const double v = amax->item<double>();
    const double top = hc->histogram().defined() ? hc->bin_width() * static_cast<double>(hc->histogram().numel()) : 0.0;
    FUZZ_CHECK(std::isfinite(v) && v >= 0.0 && v <= top * (1 + 1e-6), o.method, " amax ", v,
               " outside the histogram range [0, ", top, "] (max |x| seen ", seen_max, ")");
  }
  // The same calibrator behind a TensorQuantizer: calibrate, then load the amax.
  torchqat::TensorQuantizer tq(torchqat::QuantDescriptor().num_bits(std::clamp<int64_t>(a.num_bits, 2, 16)));
  tq->set_calibrator(hc);
  tq->enable_calib();
  tq->disable_quant();
  attempt("TensorQuantizer calib forward", [&] { tq->forward(a.x); });
  torchqat::calib::AmaxOptions o;
  o.method = methods[p.ConsumeIntegralInRange<int>(0, 2)];
  if (attempt("load_calib_amax", [&] { tq->load_calib_amax(o, /*strict=*/p.ConsumeBool()); }) && tq->has_amax()) {
    FUZZ_CHECK(amax_valid(tq->amax()), "load_calib_amax stored an invalid amax ", tq->amax());
  }
}

// The amax searches called directly on fuzzed histograms.
void fuzz_amax_search(FuzzedDataProvider& p, const Args& a) {
  const size_t n = p.ConsumeIntegralInRange<size_t>(0, 300);
  std::vector<int64_t> counts(n);
  const bool allow_negative = p.ConsumeIntegralInRange<int>(0, 7) == 0;
  for (auto& c : counts) c = p.ConsumeIntegralInRange<int64_t>(allow_negative ? -3 : 0, p.ConsumeBool() ? 3 : 1 << 20);
  static const double widths[] = {1.0, 1e-3, 0.0, -1.0, 1e-300, 1e300, NAN, INFINITY};
  const double width = widths[p.ConsumeIntegralInRange<size_t>(0, 7)];
  const int64_t start_bin = p.ConsumeIntegralInRange<int64_t>(-2, 310);
  const int64_t stride = p.ConsumeIntegralInRange<int64_t>(-1, 8);
  bool valid_counts = true;
  for (int64_t c : counts) valid_counts = valid_counts && c >= 0;
  auto check = [&](const char* what, double v, bool args_ok) {
    FUZZ_CHECK(args_ok, what, " accepted invalid arguments: bins=", n, " width=", width, " num_bits=", a.num_bits,
               " start_bin=", start_bin, " stride=", stride, " (non-negative counts: ", valid_counts, ")");
    FUZZ_CHECK(std::isfinite(v) && v >= 0.0 && v <= width * static_cast<double>(n) * (1 + 1e-9), what, " amax ", v,
               " outside [0, ", width * static_cast<double>(n), "]");
  };
  const bool hist_ok = n >= 2 && width > 0 && std::isfinite(width) && valid_counts;
  // Candidates: entropy's amax ends at bin i for i in [start_bin, n]; mse's is the centre of bin i < n.
  auto search_ok = [&](int64_t last_candidate) {
    return hist_ok && a.num_bits >= 2 && a.num_bits <= 16 && start_bin >= 1 && start_bin <= last_candidate &&
           stride >= 1;
  };
  double v = 0.0;
  if (attempt("amax_entropy", [&] {
        v = torchqat::calib::amax_entropy(counts, width, a.num_bits, a.is_unsigned, start_bin, stride);
      })) {
    check("amax_entropy", v, search_ok(static_cast<int64_t>(n)));
  }
  if (attempt("amax_mse", [&] {
        v = torchqat::calib::amax_mse(counts, width, a.num_bits, a.is_unsigned, start_bin, stride);
      })) {
    // mse quantizes float32 bin centres.
    check("amax_mse", v, search_ok(static_cast<int64_t>(n) - 1) && (static_cast<double>(n) - 0.5) * width <= FLT_MAX);
  }
  static const double percentiles[] = {99.99, 100.0, 50.0, 0.0, -1.0, 101.0, NAN};
  const double pct = percentiles[p.ConsumeIntegralInRange<size_t>(0, 6)];
  if (attempt("amax_percentile", [&] { v = torchqat::calib::amax_percentile(counts, width, pct); })) {
    check("amax_percentile", v, hist_ok && pct > 0.0 && pct <= 100.0);
  }
}

}  // namespace

// Warnings (e.g. an uncalibrated quantizer) are expected here; dropping them keeps the log readable.
struct SilentWarnings : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  static SilentWarnings silent;
  c10::WarningUtils::set_warning_handler(&silent);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider p(data, size);
  Args a;
  const at::ScalarType dt = pick_dtype(p, true);
  a.x = make_input(p, pick_shape(p, 4, 5), dt);
  if (p.ConsumeIntegralInRange<int>(0, 4) != 0) a.num_bits = p.ConsumeIntegralInRange<int64_t>(2, 16);
  else a.num_bits = p.ConsumeIntegralInRange<int64_t>(-3, 70);
  a.is_unsigned = p.ConsumeBool();
  a.narrow = p.ConsumeBool();
  if (p.ConsumeBool()) a.axis = p.ConsumeIntegralInRange<int64_t>(-6, 6);
  a.amax = make_amax(p, a.x, a.axis);
  const int what = p.ConsumeIntegralInRange<int>(0, 255);  // which optional calls run

  at::Tensor y;
  if (attempt("fake_quant", [&] { y = torchqat::fake_quant(a.x, a.amax, a.num_bits, a.is_unsigned, a.narrow, a.axis); })) {
    check_fake_quant_result(p, a, y);
    if (what & 1) fuzz_autograd(p, a);
  }
  if (what & 2) fuzz_backward_op(p, a);
  if (what & 4) fuzz_quantize(p, a, y);
  if (what & 8) fuzz_dequantize(p, a);
  if (what & 16) fuzz_abs_max(p, a);
  if (what & 32) fuzz_tensor_quantizer(p, a);
  if (what & 64) fuzz_max_calibrator(p, a);
  if (what & 128) fuzz_histogram_calibrator(p, a);
  if (p.ConsumeIntegralInRange<int>(0, 3) == 0) fuzz_amax_search(p, a);
  return 0;
}
