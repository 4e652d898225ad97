"""QDQ ONNX export (torchqat.onnx): checker, ONNX Runtime vs torchqat fake quant, dynamic batch,
TensorRT lint, per-channel axes, uint8, fp16/bf16, disabled quantizers, errors, pytorch-quantization switches."""
import copy
import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat import placement
from torchqat import onnx as tq_onnx
from torchqat.tensor_quant import QuantDescriptor

import ort_check
import yolo_like
from yolo_like import randomize_bn
from ort_check import assert_matches as _assert_matches, session as _session

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")


# ----- helpers ---------------------------------------------------------------------------------------------
def _run(proto, *xs):
    sess = _session(proto)
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: x.numpy() for n, x in zip(names, xs)})


def _torch_out(model, *xs):
    with torch.no_grad():
        out = model(*xs)
    return [t.float().numpy() for t in (out if isinstance(out, (list, tuple)) else [out])]


def _scale(proto, name):
    for t in proto.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return onnx.numpy_helper.to_array(n.attribute[0].t)
    raise KeyError(name)


def _qdq(proto, op="QuantizeLinear"):
    return [n for n in proto.graph.node if n.op_type == op]


def _axis(node):
    return next((a.i for a in node.attribute if a.name == "axis"), None)


def _export(model, x, **kw):
    kw.setdefault("input_names", ["x"])
    kw.setdefault("output_names", ["y"])
    kw.setdefault("dynamic_axes", {"x": {0: "batch"}, "y": {0: "batch"}})
    return tq_onnx.export(model, (x,), io.BytesIO(), **kw)


# ----- models ----------------------------------------------------------------------------------------------
class Add(nn.Module):
    def forward(self, x, y):
        return x + y


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        return self.relu2(self.add(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))), identity))


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.pool(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _batches(n, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(*shape, generator=g) for _ in range(n)]


def quantized_resnet():
    torch.manual_seed(0)
    model = randomize_bn(ResNetLike())
    torchqat.quantize_model(model, custom_quant_modules={Add: quant_nn.QuantAdd})
    placement.share_scales(model)
    torchqat.calibrate(model, _batches(2, (4, 3, 16, 16), 1), method="max", progress=False)
    return model


@pytest.fixture(scope="module")
def resnet():
    model = quantized_resnet()
    proto = tq_onnx.export(model, (torch.rand(1, 3, 16, 16),), io.BytesIO(), input_names=["x"],
                           output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return model, proto


@pytest.fixture(scope="module")
def yolo():
    torch.manual_seed(0)
    model = yolo_like.make_model()
    torchqat.quantize_model(model, exclude=["detect"])
    placement.share_scales(model, torch.rand(1, 3, 64, 64))  # a recorded run: fx cannot trace the route table
    torchqat.calibrate(model, _batches(2, (2, 3, 64, 64), 2), method="max", progress=False)
    names = ["images", "p3", "p4", "p5"]
    proto = tq_onnx.export(model, (torch.rand(1, 3, 64, 64),), io.BytesIO(), input_names=names[:1],
                           output_names=names[1:], dynamic_axes={n: {0: "batch"} for n in names})
    return model, proto


# ----- (a) checker, (b) ORT == torchqat, (c) dynamic batch ----------------------------------------------------
@pytest.mark.parametrize("which", ["resnet", "yolo"])
def test_checker_ort_and_dynamic_batch(which, request):
    model, proto = request.getfixturevalue(which)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 13
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"Div", "Where", "Less", "Identity"}  # scales folded into initializers
    size = 16 if which == "resnet" else 64
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(5))  # batch 3 through a batch-1 export
    _assert_matches(_run(proto, x), _torch_out(model, x))


@pytest.mark.parametrize("which", ["resnet", "yolo"])
def test_a_scale_one_percent_off_fails_the_comparison(which, request):
    """The mutation check of the comparison above: the same graph with one scale initializer times
    1.01 (what an exporter writing a wrong amax produces) must fail it."""
    model, proto = request.getfixturevalue(which)
    size = 16 if which == "resnet" else 64
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(5))
    want = _torch_out(model, x)
    _assert_matches(_run(proto, x), want)
    names = ort_check.activation_scales(proto)
    assert len(names) >= 8
    if which == "yolo":
        names = names[:: len(names) // 8]  # 8 spread over the network: each ORT run costs a session
    else:
        inits = {t.name for t in proto.graph.initializer}
        names.append(next(q.input[1] for q in _qdq(proto) if q.input[0] in inits))  # a weight's scale
    for name in names:
        with pytest.raises(AssertionError):
            _assert_matches(_run(ort_check.with_scale(proto, name, 1.01), x), want)


def test_yolo_weights_are_initializers_and_scales_shared(yolo):
    model, proto = yolo
    inits = {t.name for t in proto.graph.initializer}
    weight_q = [q for q in _qdq(proto) if q.input[0] in inits]
    n_conv = sum(isinstance(m, quant_nn.QuantConv2d) for m in model.modules())
    assert len(weight_q) == n_conv
    assert all(q.input[1] in inits for q in _qdq(proto) + _qdq(proto, "DequantizeLinear"))
    # Every concat's Q/DQ neighbours read one scale initializer after share_scales.
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for cat in (n for n in proto.graph.node if n.op_type == "Concat" and n.input[0] not in inits):
        names = {c.input[1] for t in list(cat.input) + list(cat.output) for c in consumers.get(t, [])
                 if c.op_type == "QuantizeLinear"}
        assert len(names) <= 1, f"{cat.name}: {names}"


# ----- (d) TensorRT lint ------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["resnet", "yolo"])
def test_lint_passes(which, request):
    _, proto = request.getfixturevalue(which)
    assert tq_onnx.lint_tensorrt(proto) == []


class Unshared(nn.Module):
    """A conv reading a concat input (ELAN) and a MaxPool branch next to a conv on the same tensor (MP)."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, 1, 1)
        self.c1 = nn.Conv2d(8, 8, 3, 1, 1)
        self.c2 = nn.Conv2d(16, 8, 1)
        self.mp = nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.c4 = nn.Conv2d(8, 8, 2, 2)

    def forward(self, x):
        a = self.c0(x)
        y = self.c2(torch.cat([a, self.c1(a)], 1))
        return torch.cat([self.c3(self.mp(y)), self.c4(y)], 1)


def _unshared(share):
    torch.manual_seed(0)
    model = Unshared().eval()
    torchqat.quantize_model(model)
    if share:
        placement.share_scales(model)
    torchqat.calibrate(model, _batches(1, (2, 3, 8, 8), 3), method="max", progress=False)
    if not share:  # make sure the neighbours differ
        model.c1._input_quantizer.amax = model.c2._input_quantizer.amax * 0.5
        model.c3._input_quantizer.amax = model.c4._input_quantizer.amax * 0.5
    return model


def test_lint_catches_unshared_concat_and_maxpool_scales():
    x = torch.rand(1, 3, 8, 8)
    broken = _export(_unshared(False), x)
    rules = sorted({v.rule for v in tq_onnx.lint_tensorrt(broken)})
    assert rules == ["concat-scale", "maxpool-scale"], tq_onnx.lint_tensorrt(broken)
    assert "share_scales" in str(tq_onnx.lint_tensorrt(broken)[0])
    assert tq_onnx.lint_tensorrt(_export(_unshared(True), x)) == []


def test_lint_catches_asymmetric_activation_per_channel_and_half_quantized_conv(resnet):
    _, proto = resnet
    bad = copy.deepcopy(proto)
    inits = {t.name: t for t in bad.graph.initializer}
    q_act = next(q for q in _qdq(bad) if q.input[0] not in inits)
    zp = onnx.numpy_helper.from_array(np.array(3, dtype=np.int8), "bad_zp")
    bad.graph.initializer.append(zp)
    q_act.input[2] = "bad_zp"
    rules = {v.rule for v in tq_onnx.lint_tensorrt(bad)}
    assert {"symmetric", "qdq-pair"} <= rules

    bad = copy.deepcopy(proto)
    conv = next(n for n in bad.graph.node if n.op_type == "Conv")
    dq = next(n for n in bad.graph.node if n.output[0] == conv.input[1])
    q = next(n for n in bad.graph.node if n.output[0] == dq.input[0])
    conv.input[1] = q.input[0]  # float weight straight into the conv
    assert [v.rule for v in tq_onnx.lint_tensorrt(bad)] == ["quantized-inputs"]

    bad = copy.deepcopy(proto)
    q = next(q for q in _qdq(bad) if q.input[0] in inits)
    for a in q.attribute:
        if a.name == "axis":
            a.i = 1
    assert "weight-axis" in {v.rule for v in tq_onnx.lint_tensorrt(bad)}
    assert tq_onnx.lint_tensorrt(proto, allow_float_layers=False) == []


# ----- (e) per-channel axes, uint8 ---------------------------------------------------------------------------
class AxesModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = quant_nn.QuantConv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.up = quant_nn.QuantConvTranspose2d(4, 6, 2, stride=2,
                                                quant_desc_input=QuantDescriptor(unsigned=True))
        self.fc = quant_nn.QuantLinear(6 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.up(self.relu(self.conv(x))), 1))


def _axes_model():
    torch.manual_seed(0)
    model = AxesModel().eval()
    torchqat.calibrate(model, _batches(1, (2, 3, 4, 4), 4), method="max", progress=False)
    return model


def test_per_channel_axes_and_uint8():
    model = _axes_model()
    proto = _export(model, torch.rand(1, 3, 4, 4))
    onnx.checker.check_model(proto, full_check=True)
    inits = {t.name for t in proto.graph.initializer}
    by_consumer = {}
    for n in proto.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm"):
            dq = next(d for d in _qdq(proto, "DequantizeLinear") if d.output[0] == n.input[1])
            q = next(q for q in _qdq(proto) if q.output[0] == dq.input[0])
            assert q.input[0] in inits
            by_consumer[n.op_type] = (q, dq)
    assert {k: (_axis(q), _axis(dq)) for k, (q, dq) in by_consumer.items()} == {
        "Conv": (0, 0), "ConvTranspose": (1, 1), "Gemm": (0, 0)}
    assert _scale(proto, by_consumer["ConvTranspose"][0].input[1]).shape == (6,)
    assert _scale(proto, by_consumer["Conv"][0].input[1]).shape == (4,)
    np.testing.assert_allclose(_scale(proto, by_consumer["Conv"][0].input[1]),
                               model.conv._weight_quantizer.amax.flatten().numpy() / 127, rtol=1e-7)
    zps = {q.input[0]: _scale(proto, q.input[2]) for q in _qdq(proto)}
    act = [v for k, v in zps.items() if k not in inits]
    assert sorted(str(v.dtype) for v in act) == ["int8", "int8", "uint8"]
    assert all(v.ndim == 0 and v == 0 for v in act)
    x = torch.rand(2, 3, 4, 4)
    _assert_matches(_run(proto, x), _torch_out(model, x), min_exact=0.9)
    assert tq_onnx.lint_tensorrt(proto) == []


# ----- (f) fp16 / bf16 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_models_export_as_fp32(dtype):
    model = _axes_model()
    model.to(dtype).train()
    proto = _export(model, torch.rand(1, 3, 4, 4, dtype=dtype))
    assert model.conv.weight.dtype == dtype and model.training and model.conv.training  # not changed
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {t.data_type for t in proto.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    assert "Cast" not in {n.op_type for n in proto.graph.node}
    x = torch.rand(2, 3, 4, 4)
    ref = copy.deepcopy(model).float().eval()
    # Coarse low-precision weights put more values on rounding ties, where x / scale (ONNX) and
    # x * (1 / scale) (torchqat) may round apart: only the one-step bound is asserted here.
    _assert_matches(_run(proto, x), _torch_out(ref, x), min_exact=0.0)


# ----- (g) disabled quantizers --------------------------------------------------------------------------------
def test_disabled_quantizers_emit_nothing():
    model = _axes_model()
    model.conv._input_quantizer.disable()
    model.fc._weight_quantizer.disable()
    proto = _export(model, torch.rand(1, 3, 4, 4))
    assert len(_qdq(proto)) == len(_qdq(proto, "DequantizeLinear")) == 4
    assert not any("conv/_input_quantizer" in n.name or "fc/_weight_quantizer" in n.name for n in proto.graph.node)
    x = torch.rand(2, 3, 4, 4)
    _assert_matches(_run(proto, x), _torch_out(model, x), min_exact=0.9)
    lint = tq_onnx.lint_tensorrt(proto)
    assert {v.rule for v in lint} == {"quantized-inputs"} and len(lint) == 2  # the half-quantized Conv and Gemm

    fresh = AxesModel().eval()  # uncalibrated, but all off: a float graph, no error
    for m in fresh.modules():
        if isinstance(m, quant_nn.TensorQuantizer):
            m.disable()
    proto = _export(fresh, torch.rand(1, 3, 4, 4))
    assert not _qdq(proto) and not _qdq(proto, "DequantizeLinear")


# ----- (h) errors and amax == 0 -------------------------------------------------------------------------------
def test_uncalibrated_quantizers_export_with_example_input_scales():
    model = randomize_bn(ResNetLike()).eval()
    torchqat.quantize_model(model, custom_quant_modules={Add: quant_nn.QuantAdd})
    x = torch.rand(1, 3, 16, 16)
    # Dynamic mode, as pytorch-quantization: the scales are the example input's (tests/python/compat).
    with pytest.warns(UserWarning, match="exporting quantizers that have no amax"):
        proto = _export(model, x)
    assert len(_qdq(proto)) > 0
    _assert_matches(_run(proto, x), _torch_out(model, x), min_exact=0.9)


def test_bad_bits_opset_and_amax_are_errors():
    model = _axes_model()
    model.up._weight_quantizer.num_bits = 6  # 4 bits export as INT4 weights (test_onnx_int4.py)
    with pytest.raises(ValueError, match=r"up\._weight_quantizer has num_bits=6.*int8/uint8 only"):
        _export(model, torch.rand(1, 3, 4, 4))
    with pytest.raises(Exception, match=r"up\._weight_quantizer has num_bits=6.*int8/uint8 only"):
        torch.onnx.export(model, (torch.rand(1, 3, 4, 4),), io.BytesIO(), opset_version=13, dynamo=False)
    model = _axes_model()
    with pytest.raises(ValueError, match="opset_version must be an int >= 13"):
        _export(model, torch.rand(1, 3, 4, 4), opset_version=12)
    with pytest.raises(Exception, match="opset_version >= 13"):
        torch.onnx.export(model, (torch.rand(1, 3, 4, 4),), io.BytesIO(), opset_version=12, dynamo=False)
    for bad, what in ((float("nan"), "non-finite"), (float("inf"), "non-finite"), (-1.0, "negative")):
        m = _axes_model()
        with torch.no_grad():
            m.fc._input_quantizer._amax.fill_(bad)  # past the setter's check, as a corrupted checkpoint could
        with pytest.raises(ValueError, match=rf"fc\._input_quantizer has a {what} amax"):
            _export(m, torch.rand(1, 3, 4, 4))
    m = _axes_model()
    m.fc._weight_quantizer.enable_calib()
    with pytest.raises(RuntimeError, match=r"fc\._weight_quantizer is in calibration mode"):
        _export(m, torch.rand(1, 3, 4, 4))


def test_zero_amax_gives_a_small_positive_scale():
    model = _axes_model()
    with torch.no_grad():
        model.conv.weight[1].zero_()  # a dead output channel: max calibration gives it amax 0
        amax = model.conv._weight_quantizer.amax.clone()
        amax[1] = 0
        model.conv._weight_quantizer.amax = amax
    proto = _export(model, torch.rand(1, 3, 4, 4))
    q = next(q for q in _qdq(proto) if "conv/_weight_quantizer" in q.name)
    scale = _scale(proto, q.input[1])
    assert scale.dtype == np.float32 and np.isfinite(scale).all() and (scale > 0).all()
    assert scale[1] == tq_onnx.ZERO_AMAX_SCALE == 2.0 ** -24
    x = torch.rand(2, 3, 4, 4)
    _assert_matches(_run(proto, x), _torch_out(model, x), min_exact=0.9)
    assert tq_onnx.lint_tensorrt(proto) == []

    # A per-tensor activation amax of 0: torchqat outputs 0, ONNX at most 128 * 2^-24 per element.
    model.up._input_quantizer.amax = 0.0
    proto = _export(model, torch.rand(1, 3, 4, 4))
    got, want = _run(proto, x), _torch_out(model, x)
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-4)


# ----- (i) pytorch-quantization's switches ---------------------------------------------------------------------
def test_use_fb_fake_quant_and_enable_onnx_export_give_the_same_model(resnet):
    model, proto = resnet
    x = torch.rand(2, 3, 16, 16)
    want = _run(proto, x)
    TQ = quant_nn.TensorQuantizer
    kw = dict(opset_version=13, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
              dynamo=False)

    TQ.use_fb_fake_quant = True
    try:
        f = io.BytesIO()
        torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), f, **kw)
    finally:
        TQ.use_fb_fake_quant = False
    fb = onnx.load_from_string(f.getvalue())
    np.testing.assert_array_equal(_run(fb, x)[0], want[0])
    # torch's exporter reads equal scales of different quantizers through Identity nodes; clean() rewires them
    assert {v.rule for v in tq_onnx.lint_tensorrt(fb)} <= {"identity-scale"}
    assert tq_onnx.lint_tensorrt(tq_onnx.clean(fb)) == []
    np.testing.assert_array_equal(_run(fb, x)[0], want[0])

    with torchqat.enable_onnx_export():
        assert TQ._enable_onnx_export
        f = io.BytesIO()
        torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), f, **kw)
    assert not TQ._enable_onnx_export
    np.testing.assert_array_equal(_run(onnx.load_from_string(f.getvalue()), x)[0], want[0])
    assert len(_qdq(fb)) == len(_qdq(proto))


def test_export_restores_training_mode_and_writes_paths(tmp_path):
    model = _axes_model().train()
    model.fc.eval()
    path = tmp_path / "m.onnx"
    proto = tq_onnx.export(model, torch.rand(1, 3, 4, 4), str(path))
    assert model.training and model.conv.training and not model.fc.training
    assert onnx.load(str(path)) == proto
