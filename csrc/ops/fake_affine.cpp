// fake_affine_quant: asymmetric fake quantization over [min, max] (pytorch-quantization's
// experimental fake_affine_tensor_quant, gemmlowp style). The grid is the 2^b consecutive
// integers starting at round(min / step), step = (max - min) / (2^b - 1):
//   y = clamp(round_half_even(x / step), lo, lo + 2^b - 1) * step,  lo = round_half_even(min / step).
// min and max are tensors broadcasting against x (usually 0-d); min == max (step 0) maps every
// element to min. Math in float32 (float64 for float64 x); the output has x's dtype.
// Backward: grad passes where min <= x <= max, nothing to min / max.
// Written with ATen ops, so one composite definition serves every device.
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/quant_layout.h"

namespace torchqat {
namespace detail {
namespace {

constexpr const char* kOp = "torchqat.fake_affine_quant";

// Checks that need no values (shared with the Meta kernel, SymInt sizes).
void check_affine_args(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max, int64_t num_bits) {
  TORCH_CHECK(x.defined(), kOp, ": x is undefined");
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), kOp, ": x must be float32, float16, bfloat16 or float64, got ",
                   x.scalar_type());
  quant_range(kOp, num_bits, /*is_unsigned=*/true, /*narrow_range=*/false);
  check_broadcast_bound(kOp, "min_range", min, x);
  check_broadcast_bound(kOp, "max_range", max, x);
}

at::ScalarType compute_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor fake_affine_quant(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max, int64_t num_bits) {
  check_affine_args(x, min, max, num_bits);
  const at::ScalarType ct = compute_type(x);
  const at::Tensor lo = min.detach().to(ct);
  const at::Tensor hi = max.detach().to(ct);
  if (lo.numel() > 0 && hi.numel() > 0) {
    // One reduction and one host copy on the valid path; details only when it fails.
    const at::Tensor ok = at::isfinite(lo).all() & at::isfinite(hi).all() & (hi >= lo).all();
    if (!ok.item<bool>()) {
      TORCH_CHECK_VALUE((at::isfinite(lo).all() & at::isfinite(hi).all()).item<bool>(), kOp,
                        ": min_range and max_range must be finite");
      TORCH_CHECK_VALUE(false, kOp, ": max_range must be >= min_range, got max_range - min_range = ",
                        (hi - lo).min().item<double>());
    }
  }
  const double levels = static_cast<double>((int64_t{1} << num_bits) - 1);
  const at::Tensor step = (hi - lo) / levels;
  const at::Tensor qlo = at::round(lo / step);
  const at::Tensor q = at::clamp(at::round(x.to(ct) / step), qlo, qlo + levels);
  const at::Tensor y = at::where(step > 0, q * step, lo);
  at::Tensor out = at::empty_like(dense(x));
  out.copy_(y);
  return out;
}

at::Tensor fake_affine_quant_meta(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
                                  int64_t num_bits) {
  check_affine_args(x, min, max, num_bits);
  return at::empty_like(dense(x));
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FakeAffineQuantFunction : public torch::autograd::Function<FakeAffineQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
                            int64_t num_bits) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("torchqat::fake_affine_quant", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
    at::Tensor out = op.call(x, min, max, num_bits);
    ctx->save_for_backward({x, min, max});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::ScalarType ct = compute_type(s[0]);
    const at::Tensor xc = s[0].to(ct);
    const at::Tensor in_range = (xc >= s[1].to(ct)) & (xc <= s[2].to(ct));
    at::Tensor gx = at::where(in_range, grads[0], at::zeros({}, grads[0].options())).to(s[0].scalar_type());
    return {gx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor fake_affine_quant_autograd(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max,
                                      int64_t num_bits) {
  return FakeAffineQuantFunction::apply(x, min, max, num_bits);
}

}  // namespace
}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_FRAGMENT(torchqat, m) {
  m.def("fake_affine_quant(Tensor x, Tensor min_range, Tensor max_range, int num_bits=8) -> Tensor");
}

TORCH_LIBRARY_IMPL(torchqat, CompositeExplicitAutograd, m) {
  m.impl("fake_affine_quant", &torchqat::detail::fake_affine_quant);
}

TORCH_LIBRARY_IMPL(torchqat, Meta, m) { m.impl("fake_affine_quant", &torchqat::detail::fake_affine_quant_meta); }

TORCH_LIBRARY_IMPL(torchqat, Autograd, m) { m.impl("fake_affine_quant", &torchqat::detail::fake_affine_quant_autograd); }
