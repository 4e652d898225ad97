"""Dynamic mode: a quantizer without `_amax` quantizes with the batch's amax, and exports (both
torch.onnx.export(dynamo=False) and torchqat.onnx.export) with scales from the example input and
one warning, as pytorch-quantization's dynamic quantizers do; calibrated export is unchanged."""
import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat.nn.modules._dynamic import UNCALIBRATED_EXPORT_WARNING

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
numpy_helper = onnx.numpy_helper


def _model():
    torch.manual_seed(0)
    return nn.Sequential(quant_nn.QuantConv2d(3, 4, 3, padding=1), nn.ReLU(), quant_nn.QuantConv2d(4, 2, 1)).eval()


def _export(model, x, how):
    buf = io.BytesIO()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        if how == "torch":
            torch.onnx.export(model, (x,), buf, opset_version=13, dynamo=False, input_names=["x"])
            proto = onnx.load_from_string(buf.getvalue())
        else:
            proto = torchqat.onnx.export(model, (x,), buf, input_names=["x"])
    ours = [m for m in w if str(m.message) == UNCALIBRATED_EXPORT_WARNING]
    return proto, len(ours)


def _scales(proto):
    """Scales of the QuantizeLinear nodes in graph order (initializers or Constant nodes)."""
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return [consts[n.input[1]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]


def _ort(proto, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_dynamic_forward_uses_the_batch_amax():
    q = quant_nn.TensorQuantizer()
    assert q.amax is None and "_amax" not in q.state_dict()
    for scale in (1.0, 7.0):
        x = torch.randn(64) * scale
        amax = x.abs().max().item()
        ref = torch.fake_quantize_per_tensor_affine(x, amax / 127, 0, -128, 127)
        step = amax / 127
        assert (q(x) - ref).abs().max() <= step * 1.0001  # ties may round apart (x/s vs x*(1/s))
        assert ((q(x) - ref).abs() < 1e-6).float().mean() > 0.95


@pytest.mark.parametrize("how", ["torch", "torchqat"])
def test_uncalibrated_model_exports_with_example_input_scales(how):
    model = _model()
    x = torch.randn(2, 3, 6, 6) * 3
    proto, warned = _export(model, x, how)
    assert warned == 1  # one warning for the whole export, not one per quantizer
    scales = _scales(proto)
    assert len(scales) == 4  # input + weight quantizer of each conv
    conv0, conv1 = model[0], model[2]
    h = torch.relu(conv0(x))
    want = [x.abs().max() / 127, conv0.weight.detach().abs().amax(dim=(1, 2, 3)) / 127,
            h.abs().max() / 127, conv1.weight.detach().abs().amax(dim=(1, 2, 3)) / 127]
    got = sorted(scales, key=lambda s: (s.size, float(s.flatten()[0])))
    want = sorted((w.detach().numpy().astype(np.float32) for w in want), key=lambda s: (s.size, float(s.flatten()[0])))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.reshape(-1), w.reshape(-1), rtol=1e-6)
    # The exported graph reproduces the dynamic model on the example input.
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(_ort(proto, x), ref, atol=np.abs(ref).max() / 127)
    # The scales are constants of the graph, not computed from the input at run time.
    assert not {n.op_type for n in proto.graph.node} & {"ReduceMax", "Abs", "ReduceL1"}


def test_calibrated_export_is_unchanged_and_silent():
    model = _model()
    x = torch.randn(2, 3, 6, 6)
    for m in model:
        if isinstance(m, quant_nn.QuantConv2d):
            m._input_quantizer.amax = 2.0
            m._weight_quantizer.amax = m.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    proto, warned = _export(model, x, "torchqat")
    assert warned == 0
    scales = sorted(_scales(proto), key=lambda s: s.size)
    np.testing.assert_allclose(scales[0], np.float32(2.0 / 127), rtol=1e-6)


def test_each_export_warns_again():
    model = _model()
    x = torch.randn(1, 3, 4, 4)
    assert _export(model, x, "torch")[1] == 1
    assert _export(model, x, "torch")[1] == 1


def test_partly_calibrated_model_warns_once():
    model = _model()
    model[0]._input_quantizer.amax = 1.0
    assert _export(model, torch.randn(1, 3, 4, 4), "torchqat")[1] == 1


def test_export_leaves_the_model_dynamic():
    model = _model()
    _export(model, torch.randn(1, 3, 4, 4), "torch")
    assert all(q.amax is None for q in model.modules() if isinstance(q, quant_nn.TensorQuantizer))


def _pool_model():
    torch.manual_seed(0)
    return nn.Sequential(quant_nn.QuantConv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         quant_nn.QuantConv2d(4, 2, 1)).eval()


def test_default_exporter_exports_an_uncalibrated_model_as_a_calibrated_one_would():
    """torch 2.11's plain torch.onnx.export is torch.export based (fake tensors, no example-input
    values): an uncalibrated quantizer exports with a placeholder scale, one warning, and the graph a
    calibrated export has, so graph-based pairing (the YOLOv7 recipe's, run before calibrating) works."""
    model = _pool_model()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        program = torch.onnx.export(model, (x,), None, opset_version=13)
    assert sum(str(m.message) == UNCALIBRATED_EXPORT_WARNING for m in w) == 1
    graph = program.model_proto.graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == 4 and ops.count("DequantizeLinear") == 4
    assert not set(ops) & {"ReduceMax", "Abs"}  # nothing computed from the input at run time
    # The recipe's MaxPool rule reads the first reader of the pool's output: it must be the Q.
    pool = next(n for n in graph.node if n.op_type == "MaxPool")
    first = next(n for n in graph.node if pool.output[0] in n.input)
    assert first.op_type == "QuantizeLinear"
    # Weight Q/DQ read the parameter by its module path, which the recipe maps back to the module.
    weight_q = [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0].endswith("weight")]
    assert weight_q == ["0.weight", "3.weight"]
    # Same Q/DQ structure as the calibrated model exports with.
    for m in model:
        if isinstance(m, quant_nn.QuantConv2d):
            m._input_quantizer.amax = 1.0
            m._weight_quantizer.amax = m.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    calibrated = torch.onnx.export(model, (x,), None, opset_version=13)
    assert [n.op_type for n in calibrated.model_proto.graph.node] == ops



def test_strict_capture_keeps_abs_max_and_its_onnx_form_is_the_placeholder():
    """Under Dynamo (torch.compile, strict torch.export: torch.onnx.export's fallback when the non-strict
    capture fails on the model's own code) the dynamic amax stays an abs_max node, computed for real;
    its ONNX translation is the same placeholder the non-strict capture uses, so the graph is the same."""
    model = _pool_model()
    x = torch.randn(1, 3, 8, 8)
    ep = torch.export.export(model, (x,), strict=True)
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("torchqat.abs_max.default") == 4
    torch.testing.assert_close(ep.module()(x), model(x), rtol=0, atol=0)  # the real batch amax
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        strict = torch.onnx.export(ep, (x,), None, opset_version=13)
    assert any(str(m.message) == UNCALIBRATED_EXPORT_WARNING for m in w)
    ops = [n.op_type for n in strict.model_proto.graph.node]
    assert not set(ops) & {"ReduceMax", "Abs"}
    plain = torch.onnx.export(model, (x,), None, opset_version=13)
    assert ops == [n.op_type for n in plain.model_proto.graph.node]
