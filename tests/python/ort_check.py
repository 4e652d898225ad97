"""ONNX Runtime on an exported QDQ model against torchqat's fake-quant forward, and the mutation
(one scale of the exported graph off by 1 %) that shows the comparison fails on a wrong scale.

The bound: ORT and torchqat compute the same Q/DQ graph, so outputs differ by float32 summation
order (about 1e-7 of the values summed) unless an intermediate rounds the other way near a tie
(ONNX divides by the scale, torchqat multiplies by its reciprocal), which moves the outputs it
reaches by up to one step. Hence: every element within one step of its output (abs-max / 127),
and at least min_exact of each output's elements equal to 1e-6. A scale 1 % off moves the
roundings of every element it quantizes, and the outputs downstream drift by a fraction of a step
almost everywhere: measured on the models of test_onnx_export.py, each single 1 % perturbation
of an activation scale leaves some output with at most 68 % of its elements within 1e-6 (most
far fewer), while the correct graphs match to 1e-6 in 100 %.
"""
import copy

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

EXACT = 1e-6  # relative (absolute below magnitude 1): float32 summation order, ~10x its size


def session(proto_or_path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # ORT's int8 fusions round differently
    so.intra_op_num_threads = 1
    data = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else str(proto_or_path)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def assert_matches(got, want, min_exact=0.9):
    """Each output within one int8 step of its abs-max everywhere, and equal to EXACT in at least
    min_exact of its elements (see the module docstring for why)."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {i}: shape {g.shape} != {w.shape}"
        err = np.abs(g.astype(np.float64) - w.astype(np.float64))
        step = np.abs(w).max() / 127
        assert err.max() <= step, f"output {i}: max error {err.max()} > one output step {step}"
        exact = float((err <= EXACT * np.maximum(1.0, np.abs(w))).mean())
        assert exact >= min_exact, f"output {i}: only {exact:.1%} of the elements match to {EXACT}"


def activation_scales(proto):
    """Names of the scale initializers of the QuantizeLinear nodes that quantize computed tensors
    (not weights), each once, in graph order."""
    inits = {t.name for t in proto.graph.initializer}
    names = []
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[1] in inits \
                and n.input[1] not in names:
            names.append(n.input[1])
    return names


def with_scale(proto, name, factor):
    """A copy of proto whose initializer `name` is multiplied by factor (the Q and the DQ reading it
    both change: the exporter writing a wrong amax)."""
    out = copy.deepcopy(proto)
    for t in out.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) * np.float32(factor)).astype(np.float32),
                                               name))
            return out
    raise KeyError(name)


def run(proto, x):
    """ONNX Runtime's outputs of proto on one input tensor x."""
    sess = session(proto)
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})


def torch_outputs(model, x):
    """model(x) under no_grad as a list of float32 numpy arrays (one per output)."""
    import torch

    with torch.no_grad():
        out = model(x)
    return [t.float().numpy() for t in (out if isinstance(out, (list, tuple)) else [out])]


def export_with_warnings(model, x, **kw):
    """(torchqat.onnx.export of model on (x,), the UserWarning messages it raised)."""
    import io
    import warnings

    from torchqat import onnx as tq_onnx

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        proto = tq_onnx.export(model, (x,), io.BytesIO(), **kw)
    return proto, [str(m.message) for m in w if issubclass(m.category, UserWarning)]
