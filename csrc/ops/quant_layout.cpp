#include "ops/quant_layout.h"

#include <algorithm>
#include <atomic>
#include <vector>

#include "torchqat/checks.h"
#include "torchqat/quant_rules.h"

namespace torchqat {

namespace {
std::atomic<bool> g_cuda_amax_checks{true};
}
void set_cuda_amax_checks(bool enabled) { g_cuda_amax_checks.store(enabled); }
bool cuda_amax_checks() { return g_cuda_amax_checks.load(); }

namespace detail {

QuantRange quant_range(const char* op, int64_t num_bits, bool is_unsigned, bool narrow_range) {
  check_num_bits(op, num_bits);
  const float bound = static_cast<float>(quant_bound(num_bits, is_unsigned));
  return {bound, static_cast<float>(quant_min(num_bits, is_unsigned, narrow_range)), bound};
}

bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

void check_broadcast_bound(const char* op, const char* name, const at::Tensor& b, const at::Tensor& x) {
  TORCH_CHECK(b.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK_TYPE(at::isFloatingType(b.scalar_type()), op, ": ", name, " must be a floating tensor, got ",
                   b.scalar_type());
  TORCH_CHECK_VALUE(b.device() == x.device(), op, ": x is on ", x.device(), " but ", name, " is on ", b.device(),
                    "; move ", name, " to x's device");
  bool fits = b.dim() <= x.dim();
  for (int64_t i = 1; fits && i <= b.dim(); ++i) {
    const c10::SymInt& bs = b.sym_size(-i);
    fits = bs == 1 || bs == x.sym_size(-i);
  }
  TORCH_CHECK_VALUE(fits, op, ": ", name, " of shape ", b.sym_sizes(), " does not broadcast to x of shape ",
                    x.sym_sizes());
}

void check_amax_values(const char* op, const at::Tensor& amax) {
  if (amax.is_cuda() && !cuda_amax_checks()) return;
  check_amax(op, amax);
}

// Axis the amax belongs to when the caller gave none: the one dimension of a
// broadcast-shaped amax (pytorch-quantization stores weight amax as [K,1,1,1]) that is not 1,
// or kMultiAxis when several are (axis=(0, 1)): each must then have x's size in that dim.
// Sizes are read as SymInts throughout, so the Meta kernels (symbolic shapes) share these checks.
static int64_t infer_axis(const char* op, const at::Tensor& x, const at::Tensor& amax) {
  TORCH_CHECK_VALUE(amax.dim() == x.dim(), op, ": amax of shape ", amax.sym_sizes(),
                    " has several elements but no axis was given; pass axis, or shape amax to broadcast against x of shape ",
                    x.sym_sizes());
  const std::vector<int64_t> axes = amax_axes(amax.sym_sizes());
  if (axes.size() < 2) return axes.empty() ? -1 : axes[0];
  for (int64_t d = 0; d < amax.dim(); ++d) {
    TORCH_CHECK_VALUE(amax.sym_size(d) == 1 || amax.sym_size(d) == x.sym_size(d), op, ": amax of shape ",
                      amax.sym_sizes(), " does not match x of shape ", x.sym_sizes(), " in dim ", d,
                      " (a multi-axis amax has 1 or x's size in each dim)");
  }
  return kMultiAxis;
}

int64_t check_layout(const char* op, const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis) {
  TORCH_CHECK(x.defined(), op, ": x is undefined");
  TORCH_CHECK(amax.defined(), op, ": amax is undefined (the quantizer has no amax: calibrate it or set it)");
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), op,
                   ": x must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  TORCH_CHECK_TYPE(at::isFloatingType(amax.scalar_type()), op, ": amax must be a floating tensor, got ",
                   amax.scalar_type());
  TORCH_CHECK_VALUE(x.device() == amax.device(), op, ": x is on ", x.device(), " but amax is on ", amax.device(),
                    "; move amax to x's device");

  int64_t resolved = -1;
  if (axis.has_value()) {
    const int64_t a = *axis;
    TORCH_CHECK_VALUE(a >= -x.dim() && a < x.dim() && x.dim() > 0, op, ": axis ", a,
                      " is out of range for x with ", x.dim(), " dimensions");
    resolved = a < 0 ? a + x.dim() : a;
  }
  if (amax.sym_numel() == 1) {
    resolved = -1;  // one amax for everything, whatever the axis
  } else if (resolved < 0) {
    resolved = infer_axis(op, x, amax);
  } else {
    const c10::SymInt k = x.sym_size(resolved);
    bool ok = amax.sym_numel() == k;
    if (ok && amax.dim() > 1) {
      ok = amax.dim() == x.dim() && amax.sym_size(resolved) == k;
    }
    TORCH_CHECK_VALUE(ok, op, ": amax of shape ", amax.sym_sizes(), " does not match x of shape ", x.sym_sizes(),
                      " along axis ", resolved, " (expected ", k, " values)");
  }
  if (resolved >= 0) {  // kMultiAxis was checked dim by dim in infer_axis
    TORCH_CHECK_VALUE(amax.sym_numel() == x.sym_size(resolved), op, ": amax of shape ", amax.sym_sizes(),
                      " does not match x of shape ", x.sym_sizes(), " along axis ", resolved);
  }
  return resolved;
}

at::Tensor dense(const at::Tensor& x) { return x.is_non_overlapping_and_dense() ? x : x.contiguous(); }

// The multi-axis layout: the amax dims (size > 1) of x in memory order merge into one channel
// dim when each one's stride is the next one's stride times its size; else amax is broadcast to
// x's own strides, one value per element.
static void multi_axis_layout(const at::Tensor& amax, Layout& L) {
  std::vector<int64_t> dims = amax_axes(amax.sym_sizes());
  std::stable_sort(dims.begin(), dims.end(), [&](int64_t a, int64_t b) { return L.x.stride(a) > L.x.stride(b); });
  bool nested = true;
  for (size_t i = 0; i + 1 < dims.size(); ++i)
    nested = nested && L.x.stride(dims[i]) == L.x.stride(dims[i + 1]) * L.x.size(dims[i + 1]);
  const at::Tensor a = amax.detach().to(at::kFloat);
  if (nested) {
    std::vector<int64_t> perm(dims);
    for (int64_t d = 0; d < amax.dim(); ++d)
      if (amax.size(d) == 1) perm.push_back(d);
    L.amax = a.permute(perm).reshape({-1}).contiguous();
    L.channels = L.amax.numel();
    L.inner = L.x.stride(dims.back());
  } else {
    at::Tensor full = at::empty_like(L.x, L.x.options().dtype(at::kFloat));  // x's strides
    full.copy_(a.expand(L.x.sizes()));
    L.amax = full.as_strided({full.numel()}, {1});
    L.channels = full.numel();
    L.inner = 1;
  }
}

Layout resolve_layout(const char* op, const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis,
                      bool check_values) {
  Layout L;
  L.axis = check_layout(op, x, amax, axis);
  if (check_values) check_amax_values(op, amax);

  L.x = dense(x);
  if (L.axis == kMultiAxis) {
    multi_axis_layout(amax, L);
    return L;
  }
  L.amax = amax.detach().reshape({-1}).to(at::kFloat).contiguous();
  L.channels = L.axis < 0 ? 1 : L.x.size(L.axis);
  L.inner = L.axis < 0 ? 1 : L.x.stride(L.axis);
  if (L.channels == 1) L.inner = 1;
  return L;
}

at::Tensor reshape_like_amax(const at::Tensor& per_channel, const at::Tensor& amax_arg) {
  return per_channel.reshape(amax_arg.sizes()).to(amax_arg.scalar_type());
}

}  // namespace detail
}  // namespace torchqat
