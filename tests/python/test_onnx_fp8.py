"""FP8 E4M3 quantizers (num_bits=(4, 3)) exported as opset-19 QuantizeLinear/DequantizeLinear with
FLOAT8E4M3FN zero points, run by ONNX Runtime against torchqat's fake-quant forward."""
import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat import onnx as tq_onnx
from torchqat import placement
from torchqat.tensor_quant import QuantDescriptor

import ort_check
import yolo_like
from ort_check import session
from yolo_like import randomize_bn

FP8_IN = QuantDescriptor(num_bits=(4, 3))
FP8_W = QuantDescriptor(num_bits=(4, 3), axis=(0,))


_run, _torch_out, _export = ort_check.run, ort_check.torch_outputs, ort_check.export_with_warnings


def _qdq_zero_points(proto):
    inits = {t.name: t for t in proto.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in proto.graph.node if n.op_type == "Constant"}
    return [(inits.get(n.input[2]) or consts[n.input[2]]).data_type
            for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


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


def _fp8(model, batches):
    torchqat.quantize_model(model, quant_desc_input=FP8_IN, quant_desc_weight=FP8_W)
    torchqat.calibrate(model, batches, method="max", progress=False)
    return model


def _batches(n, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return _fp8(randomize_bn(SmallNet()), _batches(2, (4, 3, 16, 16), 1))


def test_one_quantizer_equals_onnx_runtime_bit_for_bit():
    """A lone Q/DQ pair: ORT computes exactly the op's arithmetic, saturation and NaN included."""
    for desc, amax in ((FP8_IN, torch.tensor(2.5)), (QuantDescriptor(num_bits=(4, 3), axis=(1,)),
                                                     torch.tensor([[0.3], [1.0], [7.0]]).reshape(1, 3, 1, 1))):
        q = quant_nn.TensorQuantizer(desc)
        q.amax = amax
        x = torch.randn(2, 3, 40, 40) * 4
        x[0, 0, 0, :4] = torch.tensor([1e6, -1e6, float("inf"), -0.0])
        proto, _ = _export(nn.Sequential(q), x, opset_version=19)
        got = _run(proto, x)[0]
        want = q(x).numpy()
        assert np.array_equal(got.view(np.int32), want.view(np.int32))


def test_opset_raised_to_19_with_one_warning(small):
    proto, warns = _export(small, torch.randn(1, 3, 16, 16))
    fp8 = [m for m in warns if "FP8 E4M3" in m]
    assert len(fp8) == 1 and "exported at opset 19 instead of 13" in fp8[0]
    assert proto.opset_import[0].version == 19
    onnx.checker.check_model(proto, full_check=True)
    zps = _qdq_zero_points(proto)
    assert zps and set(zps) == {onnx.TensorProto.FLOAT8E4M3FN}
    assert tq_onnx.lint_tensorrt(proto) == []
    proto20, warns20 = _export(small, torch.randn(1, 3, 16, 16), opset_version=20)
    assert proto20.opset_import[0].version == 20 and not [m for m in warns20 if "FP8" in m]


def test_explicit_low_opset_is_an_error(small):
    with pytest.raises(ValueError, match=r"is FP8 E4M3 \(num_bits=\(4, 3\)\), which QuantizeLinear supports from "
                                         r"opset 19; got opset_version=13"):
        tq_onnx.export(small, (torch.randn(1, 3, 16, 16),), io.BytesIO(), opset_version=13)


def test_lint_refuses_fp8_below_opset_19(small):
    proto, _ = _export(small, torch.randn(1, 3, 16, 16))
    proto.opset_import[0].version = 18
    assert any(v.rule == "opset" and "float8_e4m3fn" in v.message for v in tq_onnx.lint_tensorrt(proto))


def test_small_net_onnx_runtime_matches(small):
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    proto, _ = _export(small, x)
    ort_check.assert_matches(_run(proto, x), _torch_out(small, x), min_exact=0.9)


def test_yolo_like_onnx_runtime_matches():
    torch.manual_seed(0)
    model = yolo_like.make_model()
    torchqat.quantize_model(model, exclude=["detect"], quant_desc_input=FP8_IN, quant_desc_weight=FP8_W)
    placement.share_scales(model, torch.rand(1, 3, 64, 64))  # concat / maxpool scales TensorRT wants shared
    torchqat.calibrate(model, _batches(2, (2, 3, 64, 64), 2), method="max", progress=False)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    proto, _ = _export(model, x)
    assert proto.opset_import[0].version == 19
    assert set(_qdq_zero_points(proto)) == {onnx.TensorProto.FLOAT8E4M3FN}
    assert tq_onnx.lint_tensorrt(proto) == []
    ort_check.assert_matches(_run(proto, x), _torch_out(model, x), min_exact=0.9)


def test_dynamo_exporter_emits_the_same_fp8_pairs(small):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    proto, _ = _export(small, x, dynamo=True)
    assert proto.opset_import[0].version == 19
    assert set(_qdq_zero_points(proto)) == {onnx.TensorProto.FLOAT8E4M3FN}
    assert tq_onnx.lint_tensorrt(proto) == []
    ort_check.assert_matches(_run(proto, x), _torch_out(small, x), min_exact=0.9)
