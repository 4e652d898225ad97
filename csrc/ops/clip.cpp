// Schemas of clip (a broadcasting clamp with the PACT gradient to its bounds), the shared
// argument checks, and the CPU and Meta registrations.
#include <ATen/ExpandUtils.h>
#include <torch/library.h>

#include "ops/clip_impl.h"
#include "ops/quant_layout.h"

namespace torchqat {
namespace detail {

ClipArgs resolve_clip(const char* op, const at::Tensor& x, const at::Tensor& min, const at::Tensor& max) {
  TORCH_CHECK(x.defined(), op, ": x is undefined");
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), op,
                   ": x must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  check_broadcast_bound(op, "min", min, x);
  check_broadcast_bound(op, "max", max, x);
  ClipArgs a;
  a.x = x.is_non_overlapping_and_dense() ? x : x.contiguous();
  auto prepare = [&](const at::Tensor& b, bool& scalar) {
    const at::Tensor t = b.detach().to(a.x.scalar_type());
    scalar = t.numel() == 1;
    if (scalar) return t.reshape({}).contiguous();
    return at::empty_like(a.x).copy_(t.expand(a.x.sizes()));
  };
  a.lo = prepare(min, a.lo_scalar);
  a.hi = prepare(max, a.hi_scalar);
  return a;
}

at::Tensor grad_like_x(const char* op, const at::Tensor& grad, const at::Tensor& x) {
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), op, ": grad of shape ", grad.sizes(), " does not match x of shape ",
                    x.sizes());
  if (grad.scalar_type() == x.scalar_type() && grad.strides() == x.strides() && grad.device() == x.device()) {
    return grad;
  }
  return at::empty_like(x).copy_(grad);
}

at::Tensor reduce_to_bound(const at::Tensor& elementwise, const at::Tensor& bound) {
  at::Tensor s = bound.numel() == 1 ? elementwise.sum() : at::sum_to(elementwise, bound.sizes());
  return s.reshape(bound.sizes()).to(bound.scalar_type());
}

namespace {

// Shapes and dtypes only, for torch.compile / torch.export tracing (no data is read).
at::Tensor clip_meta(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max) {
  const char* op = "torchqat.clip";
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), op,
                   ": x must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  check_broadcast_bound(op, "min", min, x);
  check_broadcast_bound(op, "max", max, x);
  return at::empty_like(x, x.is_non_overlapping_and_dense() ? at::MemoryFormat::Preserve
                                                             : at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> clip_backward_meta(const at::Tensor& grad, const at::Tensor& x,
                                                                  const at::Tensor& min, const at::Tensor& max,
                                                                  bool min_grad, bool max_grad) {
  at::Tensor gx = clip_meta(x, min, max);
  TORCH_CHECK_VALUE(grad.sym_sizes() == x.sym_sizes(), "torchqat.clip_backward: grad of shape ", grad.sym_sizes(),
                    " does not match x of shape ", x.sym_sizes());
  at::Tensor gmin = min_grad ? at::empty_like(min, at::MemoryFormat::Contiguous) : at::Tensor();
  at::Tensor gmax = max_grad ? at::empty_like(max, at::MemoryFormat::Contiguous) : at::Tensor();
  return {gx, gmin, gmax};
}

}  // namespace
}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_FRAGMENT(torchqat, m) {
  m.def("clip(Tensor x, Tensor min, Tensor max) -> Tensor");
  m.def("clip_backward(Tensor grad, Tensor x, Tensor min, Tensor max, bool min_grad, bool max_grad) "
        "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(torchqat, CPU, m) {
  using namespace torchqat::detail;
  m.impl("clip", &clip_impl<clip_cpu_kernel>);
  m.impl("clip_backward", &clip_backward_impl<clip_backward_cpu_kernel>);
}

TORCH_LIBRARY_IMPL(torchqat, Meta, m) {
  m.impl("clip", &torchqat::detail::clip_meta);
  m.impl("clip_backward", &torchqat::detail::clip_backward_meta);
}
