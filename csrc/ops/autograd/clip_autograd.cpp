// Autograd of clip: the pass-through mask for x and the PACT gradient (Choi et al. 2018) for
// the bounds that require grad, summed down to each bound's shape.
#include <torch/autograd.h>
#include <torch/library.h>

#include "torchqat/ops.h"

namespace torchqat {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class ClipFunction : public torch::autograd::Function<ClipFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& min, const at::Tensor& max) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = torchqat::clip(x, min, max);
    ctx->save_for_backward({x, min, max});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gx, gmin, gmax] =
        torchqat::clip_backward(grads[0], s[0], s[1], s[2], ctx->needs_input_grad(1), ctx->needs_input_grad(2));
    return {ctx->needs_input_grad(0) ? gx : at::Tensor(), gmin, gmax};
  }
};

at::Tensor clip_autograd(const at::Tensor& x, const at::Tensor& min, const at::Tensor& max) {
  return ClipFunction::apply(x, min, max);
}

}  // namespace
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, Autograd, m) { m.impl("clip", &torchqat::clip_autograd); }
