"""torch.onnx's default exporter (dynamo=True, torch.export based) on torchqat models: a plain
torch.onnx.export(model, (x,), f) gives the Q/DQ graph of the TorchScript path (same scales, zero
points, axes), ONNX Runtime agrees with the fake-quant model, and the TensorRT lint accepts it."""
import io
import warnings

import numpy as np
import pytest
import torch

from torchqat import onnx as tq_onnx

from test_onnx_export import _assert_matches, _axes_model, _run, _scale, _torch_out, quantized_resnet

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")


def _qdq_signature(proto):
    """Every QuantizeLinear as (reads an initializer, axis, zero-point dtype and values, scale values),
    sorted: independent of node and tensor names. The axis of a per-tensor (scalar-scale) node is
    None: ONNX ignores it there, and the dynamo exporter writes the default (1) out."""
    inits = {t.name for t in proto.graph.initializer}
    sig = []
    for n in proto.graph.node:
        if n.op_type != "QuantizeLinear":
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), None)
        zp = _scale(proto, n.input[2])
        scale = _scale(proto, n.input[1])
        assert scale.dtype == np.float32
        if scale.ndim == 0:
            axis = None
        sig.append((n.input[0] in inits, axis, str(zp.dtype), tuple(zp.flatten().tolist()),
                    tuple(scale.flatten().tolist())))
    return sorted(sig)


def _dq_count(proto):
    return sum(n.op_type == "DequantizeLinear" for n in proto.graph.node)


def _plain_export(model, x, **kw):
    """What a user types: torch.onnx.export with torch's defaults (dynamo=True)."""
    buf = io.BytesIO()
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, **kw)
    return onnx.load_from_string(buf.getvalue())


@pytest.fixture(scope="module")
def resnet():
    return quantized_resnet()


def test_plain_torch_onnx_export_emits_the_torchscript_qdq_graph(resnet):
    x = torch.rand(2, 3, 16, 16)
    proto = _plain_export(resnet, x)
    onnx.checker.check_model(proto)
    reference = tq_onnx.export(resnet, (x,), io.BytesIO())  # TorchScript exporter
    assert _qdq_signature(proto) == _qdq_signature(reference)
    assert _dq_count(proto) == _dq_count(reference)
    _assert_matches(_run(proto, x), _torch_out(resnet, x), min_exact=0.9)
    assert tq_onnx.lint_tensorrt(proto) == []


def _opset(proto):
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def test_torchqat_export_dynamo_opset13_axes_and_uint8():
    model = _axes_model()
    x = torch.rand(2, 3, 4, 4)
    proto = tq_onnx.export(model, (x,), io.BytesIO(), dynamo=True, input_names=["x"], output_names=["y"],
                           dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    # torch builds opset 18 and asks onnx's version converter for 13, which has no down-adapters for
    # Div-14 / Shape-15: torch keeps opset 18 (with a warning). The Q/DQ nodes are those of opset 13.
    assert _opset(proto) == 18
    reference = tq_onnx.export(model, (x,), io.BytesIO())  # TorchScript, opset 13
    assert _qdq_signature(proto) == _qdq_signature(reference)
    axes = sorted(a for (is_w, a, *_rest) in _qdq_signature(proto) if is_w)
    assert axes == [0, 0, 1]  # Conv and Linear weights: axis 0, ConvTranspose: 1
    x5 = torch.rand(5, 3, 4, 4)  # dynamic batch
    _assert_matches(_run(proto, x5), _torch_out(model, x5), min_exact=0.9)
    assert tq_onnx.lint_tensorrt(proto) == []


def test_uncalibrated_quantizer_is_refused_by_the_dynamo_path():
    from torchqat import nn as quant_nn
    model = torch.nn.Sequential(quant_nn.QuantLinear(4, 3)).eval()
    with pytest.raises(ValueError, match=r"^torchqat.onnx.export\(dynamo=True\): 0._input_quantizer has no amax"):
        tq_onnx.export(model, (torch.rand(2, 4),), io.BytesIO(), dynamo=True)
