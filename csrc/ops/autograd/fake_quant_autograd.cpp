// Autograd of fake_quant and fake_quant_e4m3: the STE mask for x and, when amax requires grad, the LSQ gradient.
#include <torch/autograd.h>
#include <torch/library.h>

#include "torchqat/ops.h"

namespace torchqat {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FakeQuantFunction : public torch::autograd::Function<FakeQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& amax, int64_t num_bits,
                            bool is_unsigned, bool narrow_range, std::optional<int64_t> axis) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = torchqat::fake_quant(x, amax, num_bits, is_unsigned, narrow_range, axis);
    ctx->save_for_backward({x, amax});
    ctx->saved_data["num_bits"] = num_bits;
    ctx->saved_data["unsigned"] = is_unsigned;
    ctx->saved_data["narrow_range"] = narrow_range;
    ctx->saved_data["axis"] = axis.has_value() ? c10::IValue(*axis) : c10::IValue();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const c10::IValue ax = ctx->saved_data["axis"];
    const std::optional<int64_t> axis = ax.isNone() ? std::nullopt : std::optional<int64_t>(ax.toInt());
    auto [gx, gamax] = torchqat::fake_quant_backward(
        grads[0], saved[0], saved[1], ctx->saved_data["num_bits"].toInt(), ctx->saved_data["unsigned"].toBool(),
        ctx->saved_data["narrow_range"].toBool(), axis, ctx->needs_input_grad(1));
    return {ctx->needs_input_grad(0) ? gx : at::Tensor(), gamax, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// FP8 E4M3: the same STE mask and LSQ amax gradient, with 448 in place of the integer bound.
class FakeQuantE4M3Function : public torch::autograd::Function<FakeQuantE4M3Function> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& amax,
                            std::optional<int64_t> axis) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = torchqat::fake_quant_e4m3(x, amax, axis);
    ctx->save_for_backward({x, amax});
    ctx->saved_data["axis"] = axis.has_value() ? c10::IValue(*axis) : c10::IValue();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const c10::IValue ax = ctx->saved_data["axis"];
    const std::optional<int64_t> axis = ax.isNone() ? std::nullopt : std::optional<int64_t>(ax.toInt());
    auto [gx, gamax] = torchqat::fake_quant_e4m3_backward(grads[0], saved[0], saved[1], axis, ctx->needs_input_grad(1));
    return {ctx->needs_input_grad(0) ? gx : at::Tensor(), gamax, at::Tensor()};
  }
};

at::Tensor fake_quant_e4m3_autograd(const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis) {
  return FakeQuantE4M3Function::apply(x, amax, axis);
}

at::Tensor fake_quant_autograd(const at::Tensor& x, const at::Tensor& amax, int64_t num_bits, bool is_unsigned,
                               bool narrow_range, std::optional<int64_t> axis) {
  return FakeQuantFunction::apply(x, amax, num_bits, is_unsigned, narrow_range, axis);
}

}  // namespace
}  // namespace torchqat

TORCH_LIBRARY_IMPL(torchqat, Autograd, m) {
  m.impl("fake_quant", &torchqat::fake_quant_autograd);
  m.impl("fake_quant_e4m3", &torchqat::fake_quant_e4m3_autograd);
}
