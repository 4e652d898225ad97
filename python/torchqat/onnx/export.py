"""torchqat.onnx.export: a quantized model to QDQ ONNX (opset >= 13) for TensorRT."""
import copy
import io
import os
import warnings

import torch
from torch.utils import _pytree

from . import checks, cleanup, symbolic

__all__ = ["export"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _has_low_precision(model):
    return any(t.dtype in _LOW_PRECISION for t in model.parameters()) or \
        any(t.dtype in _LOW_PRECISION for t in model.buffers())


def _to_float(args):
    return _pytree.tree_map(lambda t: t.float() if torch.is_tensor(t) and t.dtype in _LOW_PRECISION else t, args)


def export(model, args, f, opset_version=13, input_names=None, output_names=None, dynamic_axes=None,
           *, clean=True, **kwargs):
    """Exports a quantized model as QDQ ONNX for TensorRT; returns the onnx.ModelProto (None without onnx).

    model, args, f, input_names, output_names, dynamic_axes and the other keyword arguments are
    those of torch.onnx.export; this runs its TorchScript exporter (dynamo=False: the torch.export
    based one does not handle custom fake-quant ops) with constant folding, so scales and weights
    are initializers. Every enabled quantizer becomes QuantizeLinear -> DequantizeLinear (int8
    zero point 0, uint8 when unsigned; fp32 scale = amax / bound; per-channel `axis` for weights);
    disabled quantizers emit nothing.

    Before exporting it checks every enabled quantizer (errors name its module path): calibrated
    (has an amax), num_bits == 8, amax finite and >= 0; opset_version must be >= 13.
    The model is exported in eval mode (training flags restored afterwards); an fp16/bf16 model
    is exported from a float32 copy (the model itself is not changed), and its fp16/bf16 example
    inputs are cast to float32. clean=True (needs the onnx package) makes Q/DQ scales read initializers
    directly (no Identity), shares equal scale initializers and merges duplicate Q/DQ pairs (a shared
    quantizer reading one tensor twice).
    """
    if opset_version is None or isinstance(opset_version, bool) or not isinstance(opset_version, int) \
            or opset_version < symbolic.MIN_OPSET:
        raise ValueError(f"torchqat.onnx.export: opset_version must be an int >= {symbolic.MIN_OPSET} "
                         f"(per-channel Q/DQ needs opset 13), got {opset_version!r}")
    if kwargs.pop("dynamo", False):
        raise ValueError("torchqat.onnx.export uses torch's TorchScript exporter (dynamo=False); the dynamo "
                         "exporter cannot export torchqat's fake-quant ops")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"torchqat.onnx.export: model must be an nn.Module, got {type(model).__name__}")
    checks.check_quantizers(model)
    symbolic.register()

    if not isinstance(args, tuple):
        args = (args,)
    if _has_low_precision(model):
        model = copy.deepcopy(model).float()  # the user's model keeps its dtype
        args = _to_float(args)
    kwargs.setdefault("do_constant_folding", True)

    training = [(m, m.training) for m in model.modules()]
    buffer = io.BytesIO()
    try:
        model.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=r".*dynamo=False.*")
            torch.onnx.export(model, args, buffer, opset_version=opset_version, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, dynamo=False, **kwargs)
    finally:
        for m, mode in training:
            m.training = mode
    data = buffer.getvalue()

    proto = None
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        proto = onnx.load_from_string(data)
        if clean:
            cleanup.clean(proto)
            data = proto.SerializeToString()
    if isinstance(f, (str, os.PathLike)):
        with open(f, "wb") as fh:
            fh.write(data)
    else:
        f.write(data)
    return proto
