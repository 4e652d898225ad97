"""torchqat.onnx.export: a quantized model to QDQ ONNX (opset >= 13) for TensorRT."""
import copy
import io
import os
import warnings

import torch
from torch.utils import _pytree

from . import checks, cleanup, symbolic, translations

__all__ = ["export"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _has_low_precision(model):
    return any(t.dtype in _LOW_PRECISION for t in model.parameters()) or \
        any(t.dtype in _LOW_PRECISION for t in model.buffers())


def _to_float(args):
    return _pytree.tree_map(lambda t: t.float() if torch.is_tensor(t) and t.dtype in _LOW_PRECISION else t, args)


def _opset_for(model, opset_version):
    """opset_version, or the default: 13, or FP8_OPSET (19) with a warning when FP8 quantizers need it."""
    fp8 = checks.fp8_quantizers(model)
    if not fp8:
        return symbolic.MIN_OPSET if opset_version is None else opset_version
    first = f"{fp8[0]}" + (f" and {len(fp8) - 1} more" if len(fp8) > 1 else "")
    if opset_version is None:
        warnings.warn(f"torchqat.onnx.export: FP8 E4M3 quantizers ({first}) need QuantizeLinear to FLOAT8E4M3FN, "
                      f"so the model is exported at opset {symbolic.FP8_OPSET} instead of {symbolic.MIN_OPSET}",
                      UserWarning, stacklevel=3)
        return symbolic.FP8_OPSET
    if opset_version < symbolic.FP8_OPSET:
        raise ValueError(f"torchqat.onnx.export: {first} is FP8 E4M3 (num_bits=(4, 3)), which QuantizeLinear supports "
                         f"from opset {symbolic.FP8_OPSET}; got opset_version={opset_version}. Pass "
                         f"opset_version={symbolic.FP8_OPSET} or leave it unset")
    return opset_version


def export(model, args, f, opset_version=None, input_names=None, output_names=None, dynamic_axes=None,
           *, clean=True, dynamo=False, **kwargs):
    """Exports a quantized model as QDQ ONNX for TensorRT; returns the onnx.ModelProto (None without onnx).

    model, args, f, input_names, output_names, dynamic_axes and the other keyword arguments are
    those of torch.onnx.export. dynamo=False (the default) runs its TorchScript exporter with
    constant folding, so scales and weights are initializers; dynamo=True runs the torch.export
    based exporter (torch's own default) with torchqat's onnxscript translations; it builds opset 18
    and keeps it (with torch's warning) where onnx cannot convert down to opset_version, which for
    13 is always (no Div-14/Shape-15 down-adapters). Both give the same Q/DQ nodes. Every enabled quantizer becomes QuantizeLinear -> DequantizeLinear (int8
    zero point 0, uint8 when unsigned; fp32 scale = amax / bound; per-channel `axis` for weights);
    disabled quantizers emit nothing.

    Before exporting it checks every enabled quantizer (errors name its module path): calibrated
    (has an amax), num_bits == 8 or (4, 3), amax finite and >= 0; opset_version must be >= 13.
    FP8 E4M3 quantizers (num_bits=(4, 3)) export as QuantizeLinear/DequantizeLinear with a
    FLOAT8E4M3FN zero point and scale amax / 448, which needs opset 19: opset_version=None (the
    default: 13 otherwise) becomes 19 for such a model, with a warning; an explicit one below 19 is
    an error.
    The model is exported in eval mode (training flags restored afterwards); an fp16/bf16 model
    is exported from a float32 copy (the model itself is not changed), and its fp16/bf16 example
    inputs are cast to float32. clean=True (needs the onnx package) makes Q/DQ scales read initializers
    directly (no Identity), shares equal scale initializers and merges duplicate Q/DQ pairs (a shared
    quantizer reading one tensor twice).
    """
    if opset_version is not None and (isinstance(opset_version, bool) or not isinstance(opset_version, int)
                                      or opset_version < symbolic.MIN_OPSET):
        raise ValueError(f"torchqat.onnx.export: opset_version must be an int >= {symbolic.MIN_OPSET} "
                         f"(per-channel Q/DQ needs opset 13), got {opset_version!r}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"torchqat.onnx.export: model must be an nn.Module, got {type(model).__name__}")
    checks.check_quantizers(model)
    opset_version = _opset_for(model, opset_version)
    if dynamo:
        # torch.export keeps a dynamic quantizer's abs_max in the graph (no trace constant as in TorchScript).
        dynamic = [path for path, q in checks.exported_quantizers(model) if q.amax is None]
        if dynamic:
            raise ValueError(f"torchqat.onnx.export(dynamo=True): {dynamic[0]} has no amax; calibrate first "
                             "(torchqat.calibrate), or export with dynamo=False (scales from the example input)")
    symbolic.register()

    if not isinstance(args, tuple):
        args = (args,)
    if _has_low_precision(model):
        model = copy.deepcopy(model).float()  # the user's model keeps its dtype
        args = _to_float(args)
    if not dynamo:
        kwargs.setdefault("do_constant_folding", True)

    training = [(m, m.training) for m in model.modules()]
    buffer = io.BytesIO()
    try:
        model.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", message=r".*dynamo=False.*")
            if dynamo:
                translations.register()
                program = torch.onnx.export(model, args, None, opset_version=opset_version,
                                            input_names=input_names, output_names=output_names,
                                            dynamic_axes=dynamic_axes, dynamo=True, verbose=False, **kwargs)
                data = program.model_proto.SerializeToString()
            else:
                torch.onnx.export(model, args, buffer, opset_version=opset_version, input_names=input_names,
                                  output_names=output_names, dynamic_axes=dynamic_axes, dynamo=False, **kwargs)
                data = buffer.getvalue()
    finally:
        for m, mode in training:
            m.training = mode

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
