"""TensorRT implicit INT8: a Q/DQ-free ONNX model plus TensorRT's calibration cache, from torchqat's amax.

TensorRT 8.x builds (and Jetson deployments) often use implicit quantization: a float ONNX model
and a calibration cache (`trtexec --int8 --calib=model.cache`) instead of Q/DQ nodes. torchqat's
calibrated (or QAT-trained) amax can fill that cache directly, so TensorRT's own calibrator, which
takes minutes on the device, is not needed.

How the names are made to match: the model is exported as QDQ ONNX (torchqat.onnx.export), then
every QuantizeLinear -> DequantizeLinear pair is removed and its consumers read the pair's input
again. The tensor each activation Q read is a tensor of the Q/DQ-free graph, and its cache entry
is that Q's scale (amax / 127), so tensors that shared a quantizer share one entry value. Weight
Q/DQ pairs are removed without an entry: TensorRT computes weight scales itself.

Cache format (TensorRT's text cache): a header line (`TRT-8XXX-EntropyCalibration2` unless told
otherwise), then one line per tensor, `name: xxxxxxxx`, the 8 hex digits of the float32 scale's
IEEE-754 bits (big-endian).
"""
import json
import math
import struct

import numpy as np

from .export import export as _qdq_export

__all__ = ["export_tensorrt_implicit", "strip_qdq", "write_calibration_cache", "read_calibration_cache",
           "DEFAULT_CACHE_HEADER"]

DEFAULT_CACHE_HEADER = "TRT-8XXX-EntropyCalibration2"
_INT8_BOUND = 127.0


def _initializers(graph):
    return {t.name: t for t in graph.initializer}


def _const_value(name, inits, constants):
    import onnx.numpy_helper as nh
    if name in inits:
        return nh.to_array(inits[name])
    if name in constants:
        return nh.to_array(constants[name])
    raise ValueError(f"strip_qdq: Q/DQ scale {name!r} is not a constant (export with torchqat.onnx.export)")


def strip_qdq(model):
    """Removes every QuantizeLinear -> DequantizeLinear pair of an ONNX ModelProto, in place.

    Returns {tensor name: float32 scale for int8 (amax / 127)} for the activation tensors the
    removed Q nodes read (per-tensor only; weight pairs, whose input is an initializer, give none).
    A tensor quantized twice with different scales, a DequantizeLinear not fed by a
    QuantizeLinear (int8 weights) and a per-channel activation are errors.
    """
    graph = model.graph
    inits = _initializers(graph)
    constants = {n.output[0]: next(a.t for a in n.attribute if a.name == "value")
                 for n in graph.node if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    producers = {o: n for n in graph.node for o in n.output}
    rename, scales, drop = {}, {}, set()
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            raise ValueError(f"strip_qdq: DequantizeLinear {dq.name!r} does not read a QuantizeLinear "
                             "(an int8 constant); only torchqat's Q -> DQ pairs can be removed")
        x = q.input[0]
        rename[dq.output[0]] = x
        drop.update((id(q), id(dq)))
        if x in inits:
            continue  # a weight: TensorRT's implicit mode computes its own weight scales
        scale = np.asarray(_const_value(q.input[1], inits, constants), dtype=np.float32)
        if scale.size != 1:
            raise ValueError(f"strip_qdq: activation {x!r} has a per-channel scale ({scale.size} values); "
                             "TensorRT's calibration cache holds one scale per tensor")
        zp = q.input[2] if len(q.input) > 2 else None
        bound = 255.0 if zp is not None and _const_value(zp, inits, constants).dtype == np.uint8 else _INT8_BOUND
        s = np.float32(scale.reshape(())) if bound == _INT8_BOUND else np.float32(float(scale) * bound / _INT8_BOUND)
        if x in scales and scales[x] != s:
            raise ValueError(f"strip_qdq: tensor {x!r} is quantized with two scales ({scales[x]} and {s})")
        scales[x] = s
    kept = [n for n in graph.node if id(n) not in drop]

    def resolve(name):
        while name in rename:
            name = rename[name]
        return name

    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = resolve(name)
    for out in graph.output:
        out.name = resolve(out.name)
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:
        graph.initializer.remove(t)
    unused_constants = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]
    for n in unused_constants:
        graph.node.remove(n)
    return scales


def _check_scale(name, scale):
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"write_calibration_cache: the scale of {name!r} must be finite and > 0, got {scale}")


def write_calibration_cache(scales, path, header=DEFAULT_CACHE_HEADER):
    """Writes {tensor: float32 scale} as a TensorRT calibration cache (text format) at path."""
    if not isinstance(header, str) or not header or "\n" in header:
        raise ValueError(f"write_calibration_cache: header must be one non-empty line, got {header!r}")
    lines = [header]
    for name in sorted(scales):
        if ":" in name or "\n" in name:
            raise ValueError(f"write_calibration_cache: tensor name {name!r} cannot be written in the cache "
                             "(it holds ':' or a newline)")
        s = float(np.float32(scales[name]))
        _check_scale(name, s)
        lines.append(f"{name}: {struct.pack('>f', s).hex()}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_calibration_cache(path):
    """(header, {tensor: float32 scale}) of a TensorRT text calibration cache."""
    with open(path) as f:
        lines = f.read().splitlines()
    if not lines:
        raise ValueError(f"read_calibration_cache: {path} is empty")
    scales = {}
    for i, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep or len(value) != 8:
            raise ValueError(f"read_calibration_cache: line {i} of {path} is not 'name: <8 hex digits>': {line!r}")
        scales[name] = np.float32(struct.unpack(">f", bytes.fromhex(value))[0])
    return lines[0], scales


def _check_calibrated(model):
    """The cache must hold calibrated scales: a dynamic (uncalibrated) quantizer's would be one batch's."""
    from ..nn import TensorQuantizer
    for name, q in model.named_modules():
        if isinstance(q, TensorQuantizer) and not q.disabled and q.amax is None:
            raise ValueError(f"export_tensorrt_implicit: {name} has no amax; calibrate first (the calibration "
                             "cache needs calibrated scales, not the example input's)")


def export_tensorrt_implicit(model, args, onnx_path, cache_path, *, dynamic_range_path=None,
                             header=DEFAULT_CACHE_HEADER, opset_version=13, **export_kwargs):
    """Exports `model` for TensorRT's implicit INT8 mode; returns {tensor name: float32 scale}.

    Writes onnx_path: the model without Q/DQ nodes (a float graph); cache_path: TensorRT's
    calibration cache for it, one entry per tensor an activation quantizer reads (scale = amax/127);
    dynamic_range_path (optional): JSON {tensor: amax} for ITensor::setDynamicRange. Every enabled
    quantizer must be calibrated and 8-bit (torchqat.onnx.export's checks); the other keyword
    arguments (input_names, output_names, dynamic_axes, ...) go to torchqat.onnx.export.
    Build with: trtexec --onnx=<onnx_path> --int8 --fp16 --calib=<cache_path>
    """
    import io
    import onnx

    _check_calibrated(model)
    buffer = io.BytesIO()
    proto = _qdq_export(model, args, buffer, opset_version=opset_version, **export_kwargs)
    if proto is None:
        raise RuntimeError("export_tensorrt_implicit needs the onnx package")
    scales = strip_qdq(proto)
    onnx.checker.check_model(proto)
    write_calibration_cache(scales, cache_path, header)
    onnx.save(proto, onnx_path)
    if dynamic_range_path is not None:
        with open(dynamic_range_path, "w") as f:
            json.dump({k: float(v) * _INT8_BOUND for k, v in sorted(scales.items())}, f, indent=1)
    return scales
