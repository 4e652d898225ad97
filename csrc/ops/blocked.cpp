// Blocked layouts: one amax per block of block_size consecutive elements along dim 1 of a 2-d
// tensor (a weight's input dimension), the layout of ONNX opset 21's blocked QuantizeLinear /
// DequantizeLinear: amax is [rows, cols / block_size]. Both ops are fake_quant and abs_max on the
// [rows, cols / block_size, block_size] view, so the kernels, the STE, the LSQ amax gradient
// (N = block_size) and every device are theirs; only the layout rule lives here.
#include <torch/library.h>

#include "torchqat/ops.h"

namespace torchqat {
namespace detail {
namespace {

void check_blocked(const char* op, const at::Tensor& x, int64_t block_size) {
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be 2-d (a weight [out, in]; blocks run along dim 1), got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(block_size >= 1, op, ": block_size must be >= 1, got ", block_size);
  TORCH_CHECK_VALUE(x.size(1) % block_size == 0, op, ": block_size ", block_size,
                    " does not divide dim 1 of x (shape ", x.sizes(), ")");
}

at::Tensor blocked_view(const at::Tensor& x, int64_t block_size) {
  return x.unflatten(1, {x.size(1) / block_size, block_size});
}

at::Tensor abs_max_blocked(const at::Tensor& x, int64_t block_size) {
  check_blocked("torchqat.abs_max_blocked", x, block_size);
  return torchqat::abs_max(blocked_view(x, block_size), {0, 1}).squeeze(2);
}

at::Tensor fake_quant_blocked(const at::Tensor& x, const at::Tensor& amax, int64_t block_size, int64_t num_bits,
                              bool is_unsigned, bool narrow_range) {
  const char* op = "torchqat.fake_quant_blocked";
  check_blocked(op, x, block_size);
  const std::vector<int64_t> expected{x.size(0), x.size(1) / block_size};
  TORCH_CHECK_VALUE(amax.sizes() == at::IntArrayRef(expected), op, ": amax must have shape [", expected[0], ", ",
                    expected[1], "] (one per block of ", block_size, " along dim 1 of x of shape ", x.sizes(),
                    "), got ", amax.sizes());
  auto y = torchqat::fake_quant(blocked_view(x, block_size), amax.unsqueeze(2), num_bits, is_unsigned, narrow_range);
  return y.flatten(1, 2);
}

}  // namespace
}  // namespace detail
}  // namespace torchqat

TORCH_LIBRARY_FRAGMENT(torchqat, m) {
  m.def("abs_max_blocked(Tensor x, int block_size) -> Tensor");
  m.def(
      "fake_quant_blocked(Tensor x, Tensor amax, int block_size, int num_bits=8, bool unsigned=False, "
      "bool narrow_range=False) -> Tensor");
}

// Composite: autograd and every backend come from fake_quant / abs_max.
TORCH_LIBRARY_IMPL(torchqat, CompositeImplicitAutograd, m) {
  m.impl("abs_max_blocked", &torchqat::detail::abs_max_blocked);
  m.impl("fake_quant_blocked", &torchqat::detail::fake_quant_blocked);
}
