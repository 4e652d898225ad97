"""4-bit weight quantizers (num_bits=4, per channel) exported as opset-21 INT4 QuantizeLinear /
DequantizeLinear, run by ONNX Runtime against torchqat's fake-quant forward (w4a8: INT8 activations)."""
import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import torchqat
from torchqat import onnx as tq_onnx
from torchqat import placement
from torchqat.tensor_quant import QuantDescriptor

import ort_check
import yolo_like
from ort_check import session
from yolo_like import randomize_bn

W4 = QuantDescriptor(num_bits=4, axis=(0,))


_run, _torch_out, _export = ort_check.run, ort_check.torch_outputs, ort_check.export_with_warnings


def _zero_point_types(proto):
    """{Q/DQ input name: zero point data type}."""
    values = {t.name: t for t in proto.graph.initializer}
    values.update({n.output[0]: n.attribute[0].t for n in proto.graph.node if n.op_type == "Constant"})
    return {n.input[0]: values[n.input[2]].data_type for n in proto.graph.node if n.op_type == "QuantizeLinear"}


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _batches(n, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = randomize_bn(SmallNet())
    torchqat.quantize_model(model, quant_desc_weight=W4)
    torchqat.calibrate(model, _batches(2, (4, 3, 16, 16), 1), method="max", progress=False)
    return model


def test_w4a8_small_net_exports_int4_weights_at_opset_21(small):
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    proto, warns = _export(small, x)
    assert [m for m in warns if "INT4" in m] and "exported at opset 21 instead of 13" in \
        [m for m in warns if "INT4" in m][0]
    assert proto.opset_import[0].version == 21 and proto.ir_version >= 10
    onnx.checker.check_model(proto, full_check=True)
    zps = _zero_point_types(proto)
    for name in ("conv1.weight", "conv2.weight", "fc.weight"):
        assert zps.pop(name) == onnx.TensorProto.INT4
    assert zps and set(zps.values()) == {onnx.TensorProto.INT8}  # the activations stay int8
    # The INT4 weight scales are amax / 7 per output channel.
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "conv1.weight")
    amax = small.conv1._weight_quantizer.amax.flatten().numpy()
    assert np.array_equal(inits[q.input[1]], amax / np.float32(7))
    assert tq_onnx.lint_tensorrt(proto) == []
    ort_check.assert_matches(_run(proto, x), _torch_out(small, x), min_exact=0.9)


def test_yolo_like_w4a8_onnx_runtime_matches():
    torch.manual_seed(0)
    model = yolo_like.make_model()
    torchqat.quantize_model(model, exclude=["detect"], quant_desc_weight=W4)
    placement.share_scales(model, torch.rand(1, 3, 64, 64))
    torchqat.calibrate(model, _batches(2, (2, 3, 64, 64), 2), method="max", progress=False)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    proto, _ = _export(model, x)
    assert proto.opset_import[0].version == 21
    assert onnx.TensorProto.INT4 in set(_zero_point_types(proto).values())
    assert tq_onnx.lint_tensorrt(proto) == []
    ort_check.assert_matches(_run(proto, x), _torch_out(model, x), min_exact=0.9)


def test_int4_errors(small):
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"conv1\._weight_quantizer \(and 2 more\) has num_bits=4, which QuantizeLinear supports "
                                         r"from opset 21; got opset_version=19"):
        tq_onnx.export(small, (x,), io.BytesIO(), opset_version=19)
    with pytest.raises(ValueError, match=r"INT4 weights export with dynamo=False"):
        tq_onnx.export(small, (x,), io.BytesIO(), dynamo=True)
    with pytest.raises(ValueError, match="INT4 Q/DQ needs opset 21, past torch.onnx.export's TorchScript exporter"):
        with torchqat.enable_onnx_export():
            torch.onnx.export(small, (x,), io.BytesIO(), opset_version=20, dynamo=False)
    act4 = nn.Sequential(torchqat.nn.QuantLinear(4, 2, quant_desc_input=QuantDescriptor(num_bits=4, amax=1.0)))
    with pytest.raises(ValueError, match=r"0\._input_quantizer has num_bits=4: INT4 Q/DQ exports for weight "
                                         r"quantizers only"):
        tq_onnx.export(act4, (torch.ones(1, 4),), io.BytesIO())


def test_lint_flags_int4_on_activations_and_below_opset_21(small):
    proto, _ = _export(small, torch.randn(1, 3, 16, 16))
    proto.opset_import[0].version = 19
    assert any(v.rule == "opset" and "int4" in v.message for v in tq_onnx.lint_tensorrt(proto))
