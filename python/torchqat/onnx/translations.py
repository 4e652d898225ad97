"""ONNX translations of torchqat's operators for torch.onnx's default exporter (dynamo=True).

torch 2.11's `torch.onnx.export(model, args, f)` captures the model with torch.export (the ops'
Meta kernels make that possible) and translates every node with onnxscript. These functions are
registered in onnxscript's torch_lib registry on `import torchqat`, so a plain torch.onnx.export
needs no extra argument; `TRANSLATIONS` is the same table for `custom_translation_table=`.

They emit what the TorchScript symbolics (symbolic.py) emit: QuantizeLinear -> DequantizeLinear,
zero point 0 (int8, uint8 when unsigned), fp32 scale = amax / bound with a zero scale replaced
by ZERO_AMAX_SCALE, per-channel `axis`, Casts around the pair for fp16/bf16 inputs. The scale is
built from the amax initializer with Div/Less/Where/Reshape, which the exporter's optimizer folds
into one initializer. The exporter works at opset 18 (onnx cannot convert such graphs down to 13).
`torchqat::fake_quant_e4m3` (FP8) emits the pair with a FLOAT8E4M3FN zero point and scale
amax / 448 as opset-19 nodes; export it with opset_version >= 19.
"""
import numpy as np
import torch

from .. import _C
from .symbolic import _MIN_NORMAL_FP32, ZERO_AMAX_SCALE, channel_axis

__all__ = ["TRANSLATIONS", "register"]

try:
    import onnx_ir as ir
    from onnxscript.function_libs.torch_lib.registration import torch_op
    from onnxscript.onnx_opset import opset18 as op
    from onnxscript.onnx_opset import opset19 as op19
    import ml_dtypes
except ImportError:  # pragma: no cover - onnxscript is a requirement; without it only dynamo export is lost
    ir = torch_op = op = op19 = ml_dtypes = None

_CAST_BACK = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16) if ir is not None else ()

_registered = False


def _const(array):
    return op.Constant(value=ir.tensor(np.asarray(array)))


def fake_quant(x, amax, num_bits=8, unsigned=False, narrow_range=False, axis=None):
    """torchqat::fake_quant -> QuantizeLinear + DequantizeLinear (narrow_range exports as the full range)."""
    where = "a torchqat quantizer"
    if num_bits != 8:
        raise ValueError(f"torchqat ONNX export: {where} has num_bits={num_bits}; opset 13 Q/DQ is int8/uint8 only")
    sizes = None if amax.shape is None else [d if isinstance(d, int) else None for d in amax.shape]
    rank = None if x.shape is None else len(x.shape)
    ch_axis, channels = channel_axis(sizes, rank, axis, where)
    bound = float(_C.quant_bound(num_bits, unsigned))
    return _qdq(x, amax, bound, np.uint8 if unsigned else np.int8, ch_axis, channels, op)


def fake_quant_e4m3(x, amax, axis=None):
    """torchqat::fake_quant_e4m3 -> QuantizeLinear + DequantizeLinear to FLOAT8E4M3FN (opset 19 nodes)."""
    sizes = None if amax.shape is None else [d if isinstance(d, int) else None for d in amax.shape]
    rank = None if x.shape is None else len(x.shape)
    ch_axis, channels = channel_axis(sizes, rank, axis, "a torchqat FP8 quantizer")
    return _qdq(x, amax, 448.0, ml_dtypes.float8_e4m3fn, ch_axis, channels, op19)


def _qdq(x, amax, bound, zp_dtype, ch_axis, channels, qdq_op):
    """QuantizeLinear -> DequantizeLinear (from the opset qdq_op) with scale = amax / bound."""
    if amax.dtype != ir.DataType.FLOAT:
        amax = op.Cast(amax, to=ir.DataType.FLOAT)
    scale = op.Div(amax, _const(np.float32(bound)))
    too_small = op.Less(scale, _const(np.float32(_MIN_NORMAL_FP32)))
    scale = op.Where(too_small, _const(np.float32(ZERO_AMAX_SCALE)), scale)
    if ch_axis is None:
        scale = op.Reshape(scale, _const(np.array([], dtype=np.int64)))
        zero_point = _const(np.zeros((), dtype=zp_dtype))
        attrs = {}
    else:
        scale = op.Reshape(scale, _const(np.array([-1], dtype=np.int64)))
        zero_point = _const(np.zeros(channels, dtype=zp_dtype))
        attrs = {"axis": ch_axis}

    x_dtype = x.dtype
    if x_dtype in _CAST_BACK:
        x = op.Cast(x, to=ir.DataType.FLOAT)
    y = qdq_op.DequantizeLinear(qdq_op.QuantizeLinear(x, scale, zero_point, **attrs), scale, zero_point, **attrs)
    if x_dtype in _CAST_BACK:
        y = op.Cast(y, to=x_dtype)
    return y


def abs_max(x, keep_dims=()):
    """A dynamic (uncalibrated) quantizer's amax where torch captured the model with Dynamo (strict:
    torch.onnx.export's fallback when its non-strict capture fails): no example-input value exists
    there either, so, as in the non-strict capture (nn/modules/_dynamic.py), a placeholder amax of
    ones of the keepdims shape, with the uncalibrated-export warning."""
    import warnings

    from ..nn.modules._dynamic import UNCALIBRATED_EXPORT_WARNING
    if x.shape is None:
        raise ValueError("torchqat ONNX export: a quantizer without amax reads a tensor of unknown rank; "
                         "calibrate first (torchqat.calibrate)")
    rank = len(x.shape)
    keep = {int(d) % rank for d in keep_dims}
    shape = []
    if keep:
        for d in range(rank):
            size = x.shape[d] if d in keep else 1
            if not isinstance(size, int):
                raise ValueError(f"torchqat ONNX export: a quantizer without amax keeps dim {d}, whose size is "
                                 "dynamic; calibrate first (torchqat.calibrate)")
            shape.append(size)
    warnings.warn(UNCALIBRATED_EXPORT_WARNING, UserWarning, stacklevel=2)
    return _const(np.ones(shape, dtype=np.float32))


TRANSLATIONS = {}
if torch_op is not None:
    TRANSLATIONS = {torch.ops.torchqat.fake_quant.default: fake_quant,
                    torch.ops.torchqat.fake_quant_e4m3.default: fake_quant_e4m3,
                    torch.ops.torchqat.abs_max.default: abs_max}


def register():
    """Adds the translations to onnxscript's torch_lib registry (idempotent). Done on `import torchqat`."""
    global _registered
    if _registered or torch_op is None:
        return
    for target, fn in TRANSLATIONS.items():
        torch_op(f"torchqat::{target._schema.name.split('::')[1]}", trace_only=True)(fn)
    _registered = True
