"""torchqat.onnx.export: a quantized model to QDQ ONNX (opset >= 13) for TensorRT."""
import copy
import io
import os
import warnings

import numpy as np
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
    """opset_version, or the default: 13; FP8_OPSET (19) or INT4_OPSET (21) with a warning when FP8 or
    4-bit quantizers need it."""
    needs = []
    fp8 = checks.fp8_quantizers(model)
    if fp8:
        needs.append((symbolic.FP8_OPSET, fp8[0], len(fp8), "FP8 E4M3", "is FP8 E4M3 (num_bits=(4, 3))",
                      "FLOAT8E4M3FN"))
    int4 = [name[: -len(".weight")] + "._weight_quantizer" for name in checks.int4_weights(model)]
    if int4:
        needs.append((symbolic.INT4_OPSET, int4[0], len(int4), "INT4", "has num_bits=4", "INT4"))
    blocked = [path for path, _q in checks.blocked_quantizers(model)]
    if blocked:
        needs.append((symbolic.INT4_OPSET, blocked[0], len(blocked), "blocked", "has a block_size",
                      "a blocked scale"))
    if not needs:
        return symbolic.MIN_OPSET if opset_version is None else opset_version
    need, path, count, kind, what, onnx_type = max(needs)
    first = path + (f" (and {count - 1} more)" if count > 1 else "")
    if opset_version is None:
        warnings.warn(f"torchqat.onnx.export: {kind} quantizers ({first}) need QuantizeLinear to {onnx_type}, "
                      f"so the model is exported at opset {need} instead of {symbolic.MIN_OPSET}",
                      UserWarning, stacklevel=3)
        return need
    if opset_version < need:
        raise ValueError(f"torchqat.onnx.export: {first} {what}, which QuantizeLinear supports "
                         f"from opset {need}; got opset_version={opset_version}. Pass "
                         f"opset_version={need} or leave it unset")
    return opset_version


def _set_opset(proto, opset_version):
    """The default domain at opset_version (21 for INT4 and blocked Q/DQ), which needs IR version 10."""
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset_version
    proto.ir_version = max(proto.ir_version, 10)


def _int4_zero_points(proto, weights, opset_version):
    """The 4-bit weight Q/DQ pairs (exported with int8 / uint8 placeholder zero points) read new INT4 /
    UINT4 zero points of their scale's shape, and the model gets the opset that has them (IR 10).
    weights: {weight initializer name: quantizer}."""
    from onnx import TensorProto, helper

    cleanup.bypass_constant_identities(proto)  # scales are then initializers (clean() does it anyway)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    readers = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    done = set()
    for n in list(graph.node):
        if n.op_type != "QuantizeLinear" or n.input[0] not in weights:
            continue
        q = weights[n.input[0]]
        dims = list(inits[n.input[1]].dims)
        zp = helper.make_tensor(n.input[0] + ".int4_zero_point", TensorProto.UINT4 if q.unsigned else TensorProto.INT4,
                                dims, [0] * int(np.prod(dims, dtype=np.int64)))
        graph.initializer.append(zp)
        n.input[2] = zp.name
        for dq in readers.get(n.output[0], []):
            if dq.op_type == "DequantizeLinear":
                dq.input[2] = zp.name
        done.add(n.input[0])
    missing = set(weights) - done
    if missing:
        raise RuntimeError(f"torchqat.onnx.export: no QuantizeLinear reads the weight {sorted(missing)[0]!r} "
                           "of a 4-bit weight quantizer; export the module whose forward uses its own weight")
    _set_opset(proto, opset_version)


def _blocked_qdq(proto, opset_version):
    """Each torchqat::BlockedQDQ(x, scale) placeholder becomes QuantizeLinear -> DequantizeLinear with
    axis=1 and its block_size (opset 21), an INT4 / UINT4 (4 bits) or INT8 / UINT8 zero point of the
    scale's shape; the model gets opset_version (>= 21) and IR 10."""
    from onnx import TensorProto, helper

    cleanup.bypass_constant_identities(proto)
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    for n in graph.node:
        if n.op_type != "BlockedQDQ" or n.domain != "torchqat":
            nodes.append(n)
            continue
        attrs = {a.name: a.i for a in n.attribute}
        if n.input[1] not in inits:
            raise ValueError(f"torchqat.onnx.export: the blocked quantizer reading {n.input[0]!r} has no constant "
                             "scale; calibrate it (torchqat.calibrate) before export")
        dims = list(inits[n.input[1]].dims)
        unsigned, bits = bool(attrs["unsigned"]), attrs["num_bits"]
        zp_type = {(4, False): TensorProto.INT4, (4, True): TensorProto.UINT4,
                   (8, False): TensorProto.INT8, (8, True): TensorProto.UINT8}[(bits, unsigned)]
        zp = helper.make_tensor(n.output[0] + ".zero_point", zp_type, dims, [0] * int(np.prod(dims, dtype=np.int64)))
        graph.initializer.append(zp)
        q_out = n.output[0] + ".quantized"
        common = {"axis": 1, "block_size": attrs["block_size"]}
        nodes.append(helper.make_node("QuantizeLinear", [n.input[0], n.input[1], zp.name], [q_out],
                                      name=n.name + ".QuantizeLinear", **common))
        nodes.append(helper.make_node("DequantizeLinear", [q_out, n.input[1], zp.name], [n.output[0]],
                                      name=n.name + ".DequantizeLinear", **common))
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [o for o in proto.opset_import if o.domain != "torchqat"]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    _set_opset(proto, opset_version)


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
    an error. 4-bit weight quantizers (num_bits=4) export as INT4 Q/DQ at opset 21 the same way
    (dynamo=False only; written at opset 20 with int8 placeholder zero points, then rewritten).
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
    int4 = checks.int4_weights(model)
    if int4 and dynamo:
        raise ValueError(f"torchqat.onnx.export(dynamo=True): the quantizer of {next(iter(int4))} has num_bits=4; INT4 "
                         "weights export with dynamo=False")
    if int4 and not clean:
        raise ValueError("torchqat.onnx.export: INT4 weights need clean=True (their zero points are rewritten "
                         "after export)")
    blocked = checks.blocked_quantizers(model)
    if blocked and (dynamo or not clean):
        raise ValueError(f"torchqat.onnx.export: {blocked[0][0]} has a block_size; blocked Q/DQ exports with "
                         "dynamo=False and clean=True (its nodes are written after export)")
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
                # 4-bit weights: exported at the TorchScript exporter's last opset, 20, with int8
                # placeholder zero points; _int4_zero_points makes them INT4 at opset 21.
                # Blocked quantizers likewise: a torchqat::BlockedQDQ placeholder, made Q/DQ by _blocked_qdq.
                symbolic.int4_placeholders = bool(int4 or blocked)
                torch.onnx.export(model, args, buffer,
                                  opset_version=min(opset_version, 20) if int4 or blocked else opset_version,
                                  input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                                  dynamo=False, **kwargs)
                data = buffer.getvalue()
    finally:
        symbolic.int4_placeholders = False
        for m, mode in training:
            m.training = mode

    proto = None
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        proto = onnx.load_from_string(data)
        if int4:
            _int4_zero_points(proto, int4, opset_version)
            data = proto.SerializeToString()
        if blocked:
            _blocked_qdq(proto, opset_version)
            data = proto.SerializeToString()
        if clean:
            cleanup.clean(proto)
            data = proto.SerializeToString()
    if isinstance(f, (str, os.PathLike)):
        with open(f, "wb") as fh:
            fh.write(data)
    else:
        f.write(data)
    return proto
