"""Residual skip quantizers and TensorRT placement on real networks: torchvision ResNet-18/50 (`out += identity`
in the block's forward) and the YOLO-like net (route table and shape branches torch.fx cannot trace), each
through README's flow: quantize_model, share_scales, calibrate, torchqat.onnx.export. The exported graph is
checked here by its own walk (not torchqat's lint), then by the lint, then against ONNX Runtime."""
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat import onnx as tq_onnx

import yolo_like
from yolo_like import randomize_bn


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")


def _flow(model, size=64, rules=None, exclude=None, dyadic=False):
    """README's flow. dyadic: fold BN first and, after calibration, round every amax up to 127 * 2^k and every
    bias to a multiple of 2^-8, so each dequantized value and each conv sum is exact in fp32 in any summation
    order: torch and ONNX Runtime then give the same bits, and no rounding flip can cascade through a deep net."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, size, size)
    if dyadic:
        torchqat.fold_bn(model, example_inputs=x)
    torchqat.quantize_model(model, exclude=exclude)
    kw = {} if rules is None else {"rules": rules}
    report = torchqat.share_scales(model, x, **kw)
    batches = [torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    torchqat.calibrate(model, batches, method="max", progress=False)
    if dyadic:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, quant_nn.TensorQuantizer) and m.amax is not None:
                    m.amax = 127 * torch.exp2(torch.ceil(torch.log2(m.amax.clamp_min(1e-6) / 127)))
                if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                    m.bias.copy_(torch.round(m.bias * 256) / 256)
    proto = tq_onnx.export(model, (x,), io.BytesIO())
    return model, report, proto, x


def _resnet(depth):
    torch.manual_seed(depth)
    net = torchvision.models.resnet18() if depth == 18 else torchvision.models.resnet50()
    return randomize_bn(net, seed=depth)


@pytest.fixture(scope="module")
def resnet18():
    return _flow(_resnet(18), dyadic=True)


@pytest.fixture(scope="module")
def resnet50():
    return _flow(_resnet(50), dyadic=True)


@pytest.fixture(scope="module")
def yolo():
    return _flow(yolo_like.make_model(), exclude=["detect"])


# ----- an independent walk of the exported graph ------------------------------------------------------
class _G:
    def __init__(self, proto):
        self.nodes = list(proto.graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.values = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
        for n in self.nodes:
            if n.op_type == "Constant":
                self.values[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)

    def op(self, name):
        p = self.producer.get(name)
        return p.op_type if p is not None else None

    def from_conv(self, name):
        """Whether a tensor is a Conv/Gemm output through BatchNormalization, Relu and SiLU (x * Sigmoid(x))."""
        for _ in range(8):
            p = self.producer.get(name)
            if p is None:
                return False
            if p.op_type in ("Conv", "Gemm"):
                return True
            if p.op_type in ("BatchNormalization", "Relu"):
                name = p.input[0]
            elif p.op_type == "Mul" and any(self.op(i) == "Sigmoid" for i in p.input):
                name = next(i for i in p.input if self.op(i) != "Sigmoid")
            else:
                return False
        return False

    def scale(self, qdq):
        return self.values[qdq.input[1]]


def _residual_adds(g):
    return [n for n in g.nodes if n.op_type == "Add" and any(g.from_conv(i) for i in n.input)]


def _check_adds(proto, expected):
    g = _G(proto)
    adds = _residual_adds(g)
    assert len(adds) == expected
    for n in adds:
        ops = [g.op(i) for i in n.input]
        assert "DequantizeLinear" in ops, f"{n.name}: skip operand from {ops}"


def _check_concats(proto):
    g = _G(proto)
    cats = [n for n in g.nodes if n.op_type == "Concat"]
    checked = 0
    for n in cats:
        qdq = [c for c in g.nodes if c.op_type == "QuantizeLinear" and (c.input[0] in n.input or c.input[0] == n.output[0])]
        qdq += [g.producer[i] for i in n.input if g.op(i) == "DequantizeLinear"]
        scales = [g.scale(q) for q in qdq]
        if scales:
            checked += 1
            assert all(np.array_equal(s, scales[0]) for s in scales), f"{n.name}: {sorted({float(s) for s in scales})}"
    return checked


def _assert_close_to_ort(model, proto, x, exact=False):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # ORT's int8 fusions round differently
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x)
    want = [t.numpy() for t in (want if isinstance(want, (list, tuple)) else [want])]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if exact:  # dyadic scales and biases (see _flow): the same bits
            np.testing.assert_array_equal(a, b)
            continue
        # Both run the same Q/DQ graph; only fp32 summation order (torch's conv vs ORT's) and the Sigmoid of SiLU
        # differ, which can move a value across a rounding boundary at a quantizer: one step there. In a net
        # this shallow and narrow such flips stay rare, so the outputs agree within one int8 step of the
        # output's range (abs-max / 127) and most elements to float rounding. (In a deep net the flips
        # cascade: the ResNets are checked bit-exact with dyadic scales instead.)
        err = np.abs(a - b)
        step = np.abs(b).max() / 127
        assert err.max() <= step, f"max error {err.max()} > one output step {step}"
        assert (err <= 1e-4 * np.maximum(1.0, np.abs(b))).mean() >= 0.5


# ----- the tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("which,adds", [("resnet18", 8), ("resnet50", 16)])
def test_resnet_residual_adds_get_skip_quantizers(which, adds, request):
    model, report, proto, x = request.getfixturevalue(which)
    assert len(report.skip_quantizers) == adds and all(s.added for s in report.skip_quantizers)
    assert len(report) >= 1 and "groups" in str(report)
    _check_adds(proto, adds)
    _check_concats(proto)
    assert tq_onnx.lint_tensorrt(proto) == []
    _assert_close_to_ort(model, proto, x, exact=True)
    # the block input's skip shares the next block's conv1 input quantizer; a downsample skip has its own,
    # calibrated like any input quantizer and saved in the state dict
    assert model.layer1[1]._skip_quantizer is model.layer1[1].conv1._input_quantizer
    own = model.layer2[0]._skip_quantizer
    assert all(own is not q for n, q in model.named_modules() if n.endswith("_input_quantizer"))
    assert own.amax is not None and own.amax.item() > 0
    assert "layer2.0._skip_quantizer._amax" in model.state_dict()


def test_yolo_like_placement(yolo):
    model, report, proto, x = yolo
    assert [s.quantizer for s in report.skip_quantizers] == ["backbone.res.add._skip_quantizer"]
    assert model.backbone.res.add._skip_quantizer is model.backbone.res.cv1.conv._input_quantizer
    _check_adds(proto, 1)
    assert _check_concats(proto) == 17
    assert [v for v in tq_onnx.lint_tensorrt(proto)] == []
    _assert_close_to_ort(model, proto, x)


def test_skip_quantizers_off_leaves_float_skips_that_the_lint_names():
    model, report, proto, _ = _flow(_resnet(18), rules=("concat", "maxpool", "add"))
    assert report.skip_quantizers == []
    assert not any("_skip" in n for n, _ in model.named_modules())
    violations = [v for v in tq_onnx.lint_tensorrt(proto) if v.rule == "residual-add"]
    assert sorted(v.node for v in violations) == sorted(n.name for n in _residual_adds(_G(proto)))
    assert len(violations) == 8 and "/layer1/layer1.0/Add" in {v.node for v in violations}


class _Adds(nn.Module):
    """Residual adds written three ways in a forward, then an add that is not residual (a parameter)."""

    def __init__(self):
        super().__init__()
        self.stem = quant_nn.QuantConv2d(2, 4, 1)
        self.c1 = quant_nn.QuantConv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = quant_nn.QuantConv2d(4, 4, 1)
        self.c3 = quant_nn.QuantConv2d(4, 4, 1)
        self.act0, self.act1, self.act2 = nn.ReLU(), nn.ReLU(), nn.SiLU()
        self.id = nn.Identity()
        self.offset = nn.Parameter(torch.full((1, 4, 1, 1), 0.25))

    def forward(self, x):
        x = self.act0(self.stem(x))
        y = self.act1(torch.add(self.bn1(self.c1(x)), x))  # torch.add, the skip second
        y = self.act2(self.c2(y)) + y                      # operator +, the main operand through SiLU
        z = self.id(y)
        z += self.c3(y)                                    # +=, the main operand second
        return z + self.offset                             # a parameter operand: not residual


def test_add_forms_in_a_forward_and_idempotence():
    model = _Adds().eval()
    x = torch.rand(1, 2, 5, 5)
    report = torchqat.share_scales(model, x)
    assert [s.main for s in report.skip_quantizers] == ["c1", "c2", "c3"]
    # a skip also read by a quantized layer takes that layer's input quantizer; one read by the add alone a new one
    assert model._skip_quantizer is model.c1._input_quantizer
    assert model._skip1_quantizer is model.c2._input_quantizer
    assert all(model._skip2_quantizer is not getattr(model, c)._input_quantizer for c in ("stem", "c1", "c2", "c3"))
    again = torchqat.share_scales(model, x)
    assert [s.added for s in again.skip_quantizers] == [False, False, False]
    assert sum(1 for n, _ in model.named_children() if "_skip" in n) == 3
    torchqat.calibrate(model, [torch.rand(2, 2, 5, 5)], method="max", progress=False)
    proto = tq_onnx.export(model, (x,), io.BytesIO())
    g = _G(proto)
    adds = [n for n in g.nodes if n.op_type == "Add"]
    assert [any(g.from_conv(i) for i in n.input) for n in adds] == [True, True, True, False]
    _check_adds(proto, 3)
    assert [v for v in tq_onnx.lint_tensorrt(proto)] == []
    _assert_close_to_ort(model, proto, x)
    # no Q/DQ pair reads a DequantizeLinear with the same scale (the repeated quantization was dropped)
    assert not [n for n in g.nodes if n.op_type == "QuantizeLinear" and g.op(n.input[0]) == "DequantizeLinear"]
