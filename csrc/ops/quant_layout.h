#pragma once
// Device-independent preparation shared by every kernel of the fake-quant family:
// argument checks (each error names the argument and its value) and the memory layout
// the kernels walk: x dense in memory order, one amax per channel, channel of a memory
// offset o = (o / inner) % channels.
#include <ATen/ATen.h>
#include <optional>

namespace torchqat {
namespace detail {

struct QuantRange {
  float bound;  // 2^(b-1)-1 signed, 2^b-1 unsigned
  float qmin;
  float qmax;
};

QuantRange quant_range(const char* op, int64_t num_bits, bool is_unsigned, bool narrow_range);

// The floating dtypes the ops take for x: float32, float16, bfloat16, float64.
bool is_supported_float(at::ScalarType t);

// A clip / affine bound `name`: defined, floating, on x's device, broadcasting to x's shape (SymInt
// sizes, so the Meta kernels run the same check on symbolic shapes).
void check_broadcast_bound(const char* op, const char* name, const at::Tensor& b, const at::Tensor& x);

// check_layout's axis for an amax that varies along several dims of x (broadcast-shaped, e.g.
// [K, C, 1, 1] for a quantizer with axis=(0, 1)).
constexpr int64_t kMultiAxis = -2;

// The number formats of the fake-quant family: the symmetric integer grid, and FP8 E4M3
// (float8_e4m3fn, scale 448 / amax).
enum class Format { kInt, kE4M3 };

// FP8 E4M3's range: bound (the LSQ gradient's Qp) 448, values in [-448, 448].
inline QuantRange e4m3_range() { return {448.0f, -448.0f, 448.0f}; }

struct Layout {
  at::Tensor x;        // dense (non-overlapping) version of the input, strides preserved if possible
  at::Tensor amax;     // float32, contiguous, [channels], same device as x
  int64_t axis;        // -1 for per tensor, kMultiAxis for an amax over several dims
  int64_t channels;    // 1 for per tensor
  int64_t inner;       // memory stride of the channel axis (1 for per tensor)
};

// Checks x's dtype, amax's shape against axis and devices (not amax's values); returns the
// channel axis of x (-1 per tensor, kMultiAxis when a broadcast-shaped amax varies along several
// dims: each of them must have x's size there). Reads sizes as SymInts: the Meta kernels call it too.
int64_t check_layout(const char* op, const at::Tensor& x, const at::Tensor& amax, std::optional<int64_t> axis);

// x itself when dense in memory (any strides), else a contiguous copy: the layout kernels walk.
at::Tensor dense(const at::Tensor& x);

// check_layout, then amax's values, then the layout the kernels walk. A multi-axis amax is one
// channel dim when its dims nest in memory (channels = their product, inner = the innermost
// stride); otherwise it is broadcast to x's layout (one amax per element, inner 1).
// check_values=false skips the value check (backward: forward already checked them).
Layout resolve_layout(const char* op, const at::Tensor& x, const at::Tensor& amax,
                      std::optional<int64_t> axis, bool check_values = true);

// Checks that every amax is >= 0 and finite (on CUDA only while amax checks are on).
void check_amax_values(const char* op, const at::Tensor& amax);

// quantize's integer dtype: int8/uint8 up to 8 bits, int16/int32 (unsigned) above.
at::ScalarType quant_int_type(int64_t num_bits, bool is_unsigned);

// dequantize's check of its input: an integer (not bool) tensor.
void check_quantized_input(const char* op, const at::Tensor& q);

// The shape amax gradients and per-channel scales take: amax's own shape.
at::Tensor reshape_like_amax(const at::Tensor& per_channel, const at::Tensor& amax_arg);

}  // namespace detail
}  // namespace torchqat
