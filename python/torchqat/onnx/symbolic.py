"""The ONNX symbolics of torchqat's operators for torch's TorchScript exporter.

`torchqat::fake_quant` becomes QuantizeLinear -> DequantizeLinear (opset >= 13):
- zero point 0, int8 (uint8 when unsigned), a Constant of the scale's shape;
- scale = amax / bound as fp32 (bound = 127, or 255 unsigned), built from amax with Div and
  folded into an initializer by the exporter's constant folding;
- a zero scale (amax == 0, or an amax so small that amax / bound is subnormal) becomes
  ZERO_AMAX_SCALE = 2^-24: TensorRT needs a positive scale, and such a channel still
  dequantizes to (almost) 0: exactly 0 for zero inputs, at most 128 * 2^-24 (about 7.6e-6) otherwise;
- per channel (amax with more than one element): a 1-d scale and the `axis` attribute (the
  weight's channel axis: 0 for Conv/Linear weights, 1 for ConvTranspose weights);
- narrow_range is exported as the full int8 range (ONNX's QuantizeLinear saturates to
  [-128, 127]; only values below -amax differ, see DESIGN.md);
- fp16/bf16 inputs are cast to fp32 around the pair (opset 13 Q/DQ is fp32 only).

`torchqat::fake_quant_e4m3` (FP8 E4M3, num_bits=(4, 3)) becomes the same pair with a
FLOAT8E4M3FN zero point and scale = amax / 448 (opset >= 19, FP8_OPSET): exactly the op's own
arithmetic (ONNX QuantizeLinear saturates to +-448 and rounds to nearest even).

4-bit quantizers (INT4 weights, num_bits=4) need opset 21 (INT4 / UINT4 zero points), past the
TorchScript exporter's opset 20: inside torchqat.onnx.export (`int4_placeholders`) they are emitted
with bound 7 (15 unsigned) and an int8 / uint8 zero point, and export.py rewrites those zero points to
INT4 / UINT4 and the model to opset 21 (nothing else changes between opsets 20 and 21 but types).

`torchqat::abs_max` is not in an exported quantizer's graph: a dynamic quantizer's amax is traced
as a constant (nn/modules/_dynamic.py). Called directly in a model's forward it has no ONNX form
(TensorRT needs constant scales), and its symbolic raises.
"""
import torch

from .. import _C

try:  # torch >= 2.9 keeps the TorchScript exporter here
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as _sh
except ImportError:  # pragma: no cover - older torch
    from torch.onnx import symbolic_helper as _sh

__all__ = ["register", "fake_quant_symbolic", "fake_quant_e4m3_symbolic", "ZERO_AMAX_SCALE", "MIN_OPSET",
           "FP8_OPSET"]

MIN_OPSET = 13
# QuantizeLinear / DequantizeLinear take FLOAT8E4M3FN from opset 19, INT4 / UINT4 from opset 21.
FP8_OPSET = 19
INT4_OPSET = 21
# Set by torchqat.onnx.export while it exports a model with 4-bit weight quantizers (see above).
int4_placeholders = False
# The scale written for a zero amax: positive, a normal fp32 number whose reciprocal (2^24) is
# finite, exactly representable in fp16 and bf16, and small enough that the channel stays ~0.
ZERO_AMAX_SCALE = _C.ZERO_AMAX_SCALE  # 2^-24, include/torchqat/onnx/export.h's kZeroAmaxScale
# Scales below this (0 and fp32 subnormals) are replaced by ZERO_AMAX_SCALE.
_MIN_NORMAL_FP32 = 2.0 ** -126

_FLOAT = 1  # onnx TensorProto.FLOAT
_FLOAT16 = 10
_BFLOAT16 = 16
_CAST_BACK = {"Half": _FLOAT16, "BFloat16": _BFLOAT16}
_ONNX_TYPE = {"Float": _FLOAT, "Double": 11, **_CAST_BACK}  # TensorProto.DOUBLE = 11

_registered = False


def quantizer_path(g):
    """The module path of the quantizer whose forward produced the node being converted
    (from the TorchScript scope, e.g. 'backbone.conv1._input_quantizer'), or None."""
    try:
        scope = g.original_node.scopeName()
    except Exception:  # pragma: no cover - defensive, scopes are optional
        return None
    names = [part.rpartition("::")[2] for part in scope.split("/")[1:]]
    names = [n for n in names if n]
    return ".".join(names) or None


def _where(g):
    path = quantizer_path(g)
    return f"{path}" if path else "a torchqat quantizer"


def _const(g, value):
    return g.op("Constant", value_t=value)


def channel_axis(sizes, rank, axis, where):
    """(axis of x the amax belongs to, number of channels), or (None, 1) for a per-tensor amax.

    sizes: amax's shape (ints, or None where unknown); rank: x's rank (or None); axis: the op's
    axis argument; where: the quantizer's name for errors. Shared by both ONNX exporters."""
    if sizes is None or any(s is None for s in sizes):
        raise ValueError(f"torchqat ONNX export: the shape of the amax of {where} is unknown; "
                         "export a model whose quantizers have a calibrated amax")
    numel = 1
    for s in sizes:
        numel *= s
    if numel == 1:
        return None, 1
    if len(sizes) == 1:
        if axis is None:
            raise ValueError(f"torchqat ONNX export: {where} has a 1-d amax of {numel} elements but no axis")
        return (axis % rank if rank else axis), numel
    big = _C.amax_axes(list(sizes))
    if len(big) != 1:
        raise ValueError(f"torchqat ONNX export: {where} has an amax of shape {list(sizes)}; ONNX Q/DQ "
                         "supports one quantization axis only")
    inferred = big[0] + ((rank - len(sizes)) if rank is not None else 0)
    if axis is not None and rank is not None and axis % rank != inferred:
        raise ValueError(f"torchqat ONNX export: {where}: axis {axis} does not match the amax of shape "
                         f"{list(sizes)}")
    return inferred, numel


def _channel_axis(g, x, amax, axis):
    return channel_axis(_sh._get_tensor_sizes(amax), _sh._get_tensor_rank(x), axis, _where(g))


def fake_quant_symbolic(g, x, amax, num_bits, unsigned, narrow_range, axis):
    """torchqat::fake_quant(x, amax, num_bits, unsigned, narrow_range, axis) -> QuantizeLinear + DequantizeLinear."""
    if g.opset < MIN_OPSET:
        raise ValueError(f"torchqat ONNX export needs opset_version >= {MIN_OPSET} (per-channel QuantizeLinear has "
                         f"an axis attribute from opset 13), got {g.opset}")
    num_bits = _sh._get_const(num_bits, "i", "num_bits")
    unsigned = bool(_sh._get_const(unsigned, "b", "unsigned"))
    if num_bits == 4 and not int4_placeholders:
        raise ValueError(f"torchqat ONNX export: {_where(g)} has num_bits=4; INT4 Q/DQ needs opset {INT4_OPSET}, "
                         "past torch.onnx.export's TorchScript exporter: export with torchqat.onnx.export")
    if num_bits not in (4, 8):
        raise ValueError(f"torchqat ONNX export: {_where(g)} has num_bits={num_bits}; ONNX Q/DQ is int8/uint8 only, "
                         "besides INT4 weights (num_bits=4) and FP8 E4M3 (num_bits=(4, 3))")
    axis = None if _sh._is_none(axis) else _sh._get_const(axis, "i", "axis")
    ch_axis, channels = _channel_axis(g, x, amax, axis)
    bound = float(_C.quant_bound(num_bits, unsigned))
    return _qdq(g, x, amax, bound, torch.uint8 if unsigned else torch.int8, ch_axis, channels)


def fake_quant_e4m3_symbolic(g, x, amax, axis):
    """torchqat::fake_quant_e4m3(x, amax, axis) -> QuantizeLinear + DequantizeLinear to FLOAT8E4M3FN (opset >= 19)."""
    if g.opset < FP8_OPSET:
        raise ValueError(f"torchqat ONNX export: {_where(g)} is FP8 E4M3 (num_bits=(4, 3)), which QuantizeLinear "
                         f"supports from opset {FP8_OPSET}; got opset_version={g.opset}")
    axis = None if _sh._is_none(axis) else _sh._get_const(axis, "i", "axis")
    ch_axis, channels = _channel_axis(g, x, amax, axis)
    return _qdq(g, x, amax, 448.0, torch.float8_e4m3fn, ch_axis, channels)


def _scale(g, amax, bound):
    """scale = amax / bound (fp32), a zero scale replaced; all of it folds into one initializer."""
    if amax.type().scalarType() != "Float":
        amax = g.op("Cast", amax, to_i=_FLOAT)
    scale = g.op("Div", amax, _const(g, torch.tensor(bound, dtype=torch.float32)))
    too_small = g.op("Less", scale, _const(g, torch.tensor(_MIN_NORMAL_FP32, dtype=torch.float32)))
    return g.op("Where", too_small, _const(g, torch.tensor(ZERO_AMAX_SCALE, dtype=torch.float32)), scale)


def _qdq(g, x, amax, bound, zp_dtype, ch_axis, channels):
    """QuantizeLinear -> DequantizeLinear with scale = amax / bound and a zero point of zp_dtype."""
    scale = _scale(g, amax, bound)
    if ch_axis is None:
        scale = g.op("Reshape", scale, _const(g, torch.tensor([], dtype=torch.int64)))
        zero_point = _const(g, torch.tensor(0, dtype=zp_dtype))
        attrs = {}
    else:
        scale = g.op("Reshape", scale, _const(g, torch.tensor([-1], dtype=torch.int64)))
        zero_point = _const(g, torch.zeros(channels, dtype=zp_dtype))
        attrs = {"axis_i": ch_axis}

    x_type = x.type().scalarType() if x.type() is not None else None
    if x_type in _CAST_BACK:
        x = g.op("Cast", x, to_i=_FLOAT)
    q = g.op("QuantizeLinear", x, scale, zero_point, **attrs)
    y = g.op("DequantizeLinear", q, scale, zero_point, **attrs)
    if x_type in _CAST_BACK:
        y = g.op("Cast", y, to_i=_CAST_BACK[x_type])
    return y


def fake_quant_blocked_symbolic(g, x, amax, block_size, num_bits, unsigned, narrow_range):
    """torchqat::fake_quant_blocked -> a torchqat::BlockedQDQ(x, scale) placeholder, which
    torchqat.onnx.export turns into opset 21's blocked QuantizeLinear / DequantizeLinear (torch's
    TorchScript exporter stops at opset 20)."""
    if not int4_placeholders:
        raise ValueError(f"torchqat ONNX export: {_where(g)} has a block_size; blocked Q/DQ needs opset "
                         f"{INT4_OPSET}, past torch.onnx.export's TorchScript exporter: export with torchqat.onnx.export")
    num_bits = _sh._get_const(num_bits, "i", "num_bits")
    unsigned = bool(_sh._get_const(unsigned, "b", "unsigned"))
    if num_bits not in (4, 8):
        raise ValueError(f"torchqat ONNX export: {_where(g)} has num_bits={num_bits}; blocked Q/DQ is INT4 or INT8")
    block_size = _sh._get_const(block_size, "i", "block_size")
    scale = _scale(g, amax, float(_C.quant_bound(num_bits, unsigned)))
    x_type = x.type().scalarType() if x.type() is not None else None
    if x_type in _CAST_BACK:
        x = g.op("Cast", x, to_i=_FLOAT)
    y = g.op("torchqat::BlockedQDQ", x, scale, block_size_i=block_size, num_bits_i=num_bits, unsigned_i=int(unsigned))
    y.setType(x.type())
    if x_type in _CAST_BACK:
        y = g.op("Cast", y, to_i=_CAST_BACK[x_type])
    return y


def abs_max_symbolic(g, x, keep_dims):
    """torchqat.abs_max called in a forward: not exportable, TensorRT needs constant scales."""
    raise ValueError(f"torchqat ONNX export: torchqat.abs_max in {_where(g)} has no ONNX form (TensorRT needs "
                     "constant scales); quantizers without amax export their example-input amax instead")


def clip_symbolic(g, x, lo, hi):
    """torchqat::clip(x, min, max) -> Max(Min(x, max), min): ONNX Min / Max broadcast like the op
    (Clip's min / max inputs must be scalars); the bounds take x's type, as in the op."""
    x_type = x.type().scalarType()
    if x_type is not None and x_type in _ONNX_TYPE:
        to = _ONNX_TYPE[x_type]
        lo, hi = g.op("Cast", lo, to_i=to), g.op("Cast", hi, to_i=to)
    return g.op("Max", g.op("Min", x, hi), lo)


def register():
    """Registers the symbolics with torch.onnx (idempotent). Done on `import torchqat`."""
    global _registered
    if _registered:
        return
    # Registered from opset 1 so that an opset < 13 export reaches our clear error, not "unsupported op".
    torch.onnx.register_custom_op_symbolic("torchqat::fake_quant", fake_quant_symbolic, 1)
    torch.onnx.register_custom_op_symbolic("torchqat::fake_quant_e4m3", fake_quant_e4m3_symbolic, 1)
    torch.onnx.register_custom_op_symbolic("torchqat::abs_max", abs_max_symbolic, 1)
    torch.onnx.register_custom_op_symbolic("torchqat::fake_quant_blocked", fake_quant_blocked_symbolic, 1)
    torch.onnx.register_custom_op_symbolic("torchqat::clip", clip_symbolic, 1)
    _registered = True
