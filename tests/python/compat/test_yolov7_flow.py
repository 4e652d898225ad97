"""NVIDIA's YOLOv7 QAT flow (yolo_deepstream yolov7_qat/quantization/quantize.py), step by step as
that script does it, written here in our own words, on the YOLO-like network of the tests:

initialize (histogram input descriptors) -> replace convs by __new__ + vars() copy + init_quantizer
-> export ONNX *before calibration* and pair quantizers on the graph (Concat, MaxPool rules) ->
calibrate (max for weights, histogram mse for inputs, load_calib_amax) -> feature-distillation
finetune -> torch.save({"model": model}) / torch.load -> export with use_fb_fake_quant,
torch.onnx.export(opset_version=13, dynamo=False)."""
import copy
import re
import warnings

import numpy as np
import pytest
import torch

import torchqat
from torchqat import calib
from torchqat import nn as quant_nn
from torchqat import quant_modules
from torchqat.nn.modules import _utils as quant_nn_utils
from torchqat.nn.modules._dynamic import UNCALIBRATED_EXPORT_WARNING
from torchqat.tensor_quant import QuantDescriptor

import yolo_like

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")

IGNORE = r"detect\.m\.(.*)"  # the recipe keeps the detect head's 1x1 convs float


@pytest.fixture()
def recipe_defaults():
    """The recipe's initialize(): histogram calibration for inputs. Restored after the test."""
    classes = (quant_nn.QuantConv2d, quant_nn.QuantMaxPool2d, quant_nn.QuantLinear)
    saved = [c.__dict__.get("default_quant_desc_input") for c in classes]
    desc = QuantDescriptor(calib_method="histogram")
    for c in classes:
        c.set_default_quant_desc_input(desc)
    yield
    for c, old in zip(classes, saved):
        if old is None:
            delattr(c, "default_quant_desc_input")
        else:
            c.default_quant_desc_input = old


# ----- the recipe's functions, in our words --------------------------------------------------------------
def transfer(float_module, quant_cls):
    q = quant_cls.__new__(quant_cls)
    for k, v in vars(float_module).items():
        setattr(q, k, v)

    def __init__(self):  # noqa: N807 - the recipe defines a local __init__ and calls it
        desc_in, desc_w = quant_nn_utils.pop_quant_desc_in_kwargs(self.__class__)
        if isinstance(self, quant_nn_utils.QuantInputMixin):
            self.init_quantizer(desc_in)
            if isinstance(self._input_quantizer._calibrator, calib.HistogramCalibrator):
                self._input_quantizer._calibrator._torch_hist = True
        else:
            self.init_quantizer(desc_in, desc_w)
            if isinstance(self._input_quantizer._calibrator, calib.HistogramCalibrator):
                self._input_quantizer._calibrator._torch_hist = True
                self._weight_quantizer._calibrator._torch_hist = True

    __init__(q)
    return q


def replace_modules(model, ignore):
    table = {id(getattr(e.orig_mod, e.mod_name)): e.replace_mod for e in quant_modules._DEFAULT_QUANT_MAP}

    def walk(module, prefix=""):
        for name in module._modules:
            sub = module._modules[name]
            path = f"{prefix}.{name}" if prefix else name
            walk(sub, path)
            if id(type(sub)) in table and not re.match(ignore, path):
                module._modules[name] = transfer(sub, table[id(type(sub))])

    walk(model)


def export_onnx(model, x, f, **kwargs):
    quant_nn.TensorQuantizer.use_fb_fake_quant = True
    model.eval()
    with torch.no_grad():
        torch.onnx.export(model, x, f, dynamo=False, **kwargs)
    quant_nn.TensorQuantizer.use_fb_fake_quant = False


def get_path(model, path):
    for name in path.split("."):
        model = getattr(model, name)
    return model


def find_pairs(proto):
    """(major, sub) conv paths whose input quantizers must share a scale, read off the Q/DQ graph:
    convs reading a Concat's output or any of its inputs share the first such conv's quantizer; a
    conv reading a MaxPool's input shares the quantizer of the conv after the MaxPool."""
    nodes = list(proto.graph.node)
    readers = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def conv_of_q(q):  # Q -> DQ -> Conv: the conv's path from its weight initializer's name
        for dq in readers.get(q.output[0], []):
            for conv in readers.get(dq.output[0], []):
                if conv.op_type == "Conv" and conv.input[0] == dq.output[0]:
                    wq = next(p for p in nodes if p.output[0] == conv.input[1])  # weight DQ
                    wq = next(p for p in nodes if p.output[0] == wq.input[0])  # weight Q
                    return wq.input[0][:-len(".weight")]
        return None

    def q_readers(tensor):
        return [n for n in readers.get(tensor, []) if n.op_type == "QuantizeLinear" and conv_of_q(n)]

    pairs = []
    for n in nodes:
        if n.op_type == "Concat":
            out_q = q_readers(n.output[0])
            if not out_q:
                continue
            major = conv_of_q(out_q[0])
            for q in out_q[1:] + [q for t in n.input for q in q_readers(t)]:
                pairs.append((major, conv_of_q(q)))
        elif n.op_type == "MaxPool":
            out_q = q_readers(n.output[0])
            if out_q:
                major = conv_of_q(out_q[0])
                pairs += [(major, conv_of_q(q)) for q in q_readers(n.input[0])]
    return [(a, b) for a, b in pairs if a != b]


def quantizers(model):
    return [m for m in model.modules() if isinstance(m, quant_nn.TensorQuantizer)]


def calibrate(model, batches):
    model.eval()
    for q in quantizers(model):
        if q._calibrator is not None:
            q.disable_quant()
            q.enable_calib()
        else:
            q.disable()
    with torch.no_grad():
        for x in batches:
            model(x)
    for q in quantizers(model):
        if q._calibrator is not None:
            q.enable_quant()
            q.disable_calib()
        else:
            q.enable()
    for q in quantizers(model):
        if q._calibrator is not None:
            if isinstance(q._calibrator, calib.MaxCalibrator):
                q.load_calib_amax()
            else:
                q.load_calib_amax(method="mse")
            q._amax = q._amax.to("cpu")


def finetune(model, batches, steps, lr):
    """Feature distillation against a float copy: MSE between the outputs of matching modules."""
    teacher = copy.deepcopy(model).eval()
    for q in quantizers(teacher):
        q._disabled = True
    model.train()
    model.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr)
    outs, ref = [], []
    pairs = [(s, t) for (n, s), (_, t) in zip(model.named_modules(), teacher.named_modules())
             if n.startswith("backbone.") and n.count(".") == 1]
    handles = [s.register_forward_hook(lambda m, i, o: outs.append(o)) for s, _ in pairs]
    handles += [t.register_forward_hook(lambda m, i, o: ref.append(o)) for _, t in pairs]

    def loss(x):
        outs.clear()
        ref.clear()
        model(x)
        with torch.no_grad():
            teacher(x)
        return sum(torch.nn.functional.mse_loss(a, b) for a, b in zip(outs, ref))

    losses = []
    for i in range(steps):
        value = loss(batches[i % len(batches)])
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    for h in handles:
        h.remove()  # the recipe removes hooks before torch.save / export
    return losses, loss


# ----- the test ------------------------------------------------------------------------------------------
def _batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, 64, 64, generator=g) for _ in range(n)]


def _ort(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x.numpy()})


def test_yolov7_qat_flow_as_nvidia_writes_it(recipe_defaults, tmp_path):
    model = torchqat.fold_bn(yolo_like.make_model(), example_inputs=torch.rand(1, 3, 64, 64))  # the recipe quantizes the fused model
    replace_modules(model, IGNORE)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, quant_nn.QuantConv2d)}
    assert len(convs) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - 3
    assert all(type(m) is torch.nn.Conv2d for m in model.detect.m)
    assert all(isinstance(m._input_quantizer._calibrator, calib.HistogramCalibrator) for m in convs.values())
    assert all(isinstance(m._weight_quantizer._calibrator, calib.MaxCalibrator) for m in convs.values())

    # 1. Export before calibration (dynamic quantizers) and pair quantizers on the graph.
    x = torch.rand(1, 3, 64, 64)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        export_onnx(model, x, str(tmp_path / "rules.onnx"), opset_version=13)
    assert sum(str(m.message) == UNCALIBRATED_EXPORT_WARNING for m in w) == 1
    pairs = find_pairs(onnx.load(str(tmp_path / "rules.onnx")))
    assert ("backbone.mp3.cv1.conv", "backbone.mp3.cv2.conv") in pairs  # MaxPool rule
    assert ("backbone.elan2.out.conv", "backbone.elan2.cv3.conv") in pairs  # Concat input read by another conv
    for major, sub in pairs:
        get_path(model, sub)._input_quantizer = get_path(model, major)._input_quantizer
    shared = get_path(model, "backbone.mp3.cv1.conv")._input_quantizer
    assert get_path(model, "backbone.mp3.cv2.conv")._input_quantizer is shared

    # 2. Calibrate: max for weights, histogram mse for inputs.
    calibrate(model, _batches(4, seed=1))
    qs = quantizers(model)
    assert all(q.amax is not None and torch.isfinite(q.amax).all() for q in qs)
    w_amax = convs["backbone.stem.0.conv"]._weight_quantizer.amax
    want = convs["backbone.stem.0.conv"].weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    assert w_amax.shape == (8, 1, 1, 1) and torch.equal(w_amax, want)
    keys = model.state_dict().keys()
    assert "backbone.stem.0.conv._input_quantizer._amax" in keys and "detect.m.0.weight" in keys
    assert not any(k.startswith("detect.m.") and "quantizer" in k for k in keys)

    # 3. Feature-distillation finetune (the recipe's lr): the STE gradient reaches every quantized weight,
    #    the weights move, the calibrated amax stays.
    amax_before = {n: m._input_quantizer.amax.clone() for n, m in convs.items()}
    w_before = {n: m.weight.detach().clone() for n, m in convs.items()}
    losses, _ = finetune(model, _batches(2, seed=2), steps=2, lr=1e-5)
    assert all(np.isfinite(losses)) and losses[0] > 0
    # (the supervised outputs are the backbone's, so its convs are the ones trained)
    trained = [n for n in convs if n.startswith("backbone.")]
    assert len(trained) > 20 and all(not torch.equal(convs[n].weight.detach(), w_before[n]) for n in trained)
    assert all(torch.equal(m._input_quantizer.amax, amax_before[n]) for n, m in convs.items())

    # 4. Save the whole model as the recipe does, load it back.
    torch.save({"model": model}, tmp_path / "qat.pt")
    loaded = torch.load(tmp_path / "qat.pt", weights_only=False)["model"]
    assert get_path(loaded, "backbone.mp3.cv2.conv")._input_quantizer is \
        get_path(loaded, "backbone.mp3.cv1.conv")._input_quantizer
    model.eval()
    loaded.eval()
    xt = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(xt), loaded(xt)):
            assert torch.equal(a, b)

    # 5. Export the calibrated model: no warning, ONNX Runtime agrees with torchqat.
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        export_onnx(loaded, x, str(tmp_path / "qat.onnx"), opset_version=13, input_names=["images"],
                    output_names=["out3", "out4", "out5"], dynamic_axes={"images": {0: "batch"}})
    assert not any(str(m.message) == UNCALIBRATED_EXPORT_WARNING for m in w)
    proto = onnx.load(str(tmp_path / "qat.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) >= len(convs) + 1
    with torch.no_grad():
        want = [t.numpy() for t in loaded(xt)]
    for got, ref in zip(_ort(str(tmp_path / "qat.onnx"), xt), want):
        step = np.abs(ref).max() / 127
        assert np.abs(got - ref).max() <= 2 * step
        assert np.mean(np.abs(got - ref) < 1e-4) > 0.9


def test_pairing_before_calibration_with_torchs_default_exporter(recipe_defaults, tmp_path):
    """torch 2.11's plain torch.onnx.export (torch.export based), which the recipe's export_onnx reaches
    when it passes no dynamo=False, gives the uncalibrated model the graph the TorchScript export gives:
    the same quantizer pairs (on an ELAN block and a MaxPool branch block: torch.export of the whole
    network costs too long for CI)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(yolo_like.ConvBNAct(3, 8, 3), yolo_like.ELAN(8, 8, 4), yolo_like.MPDown(8, 4),
                              yolo_like.ConvBNAct(8, 8, 1))
    x = torch.rand(1, 3, 16, 16)
    model = torchqat.fold_bn(net.eval(), example_inputs=x)
    replace_modules(model, IGNORE)
    export_onnx(model, x, str(tmp_path / "ts.onnx"), opset_version=13)
    model.eval()
    with torch.no_grad(), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.onnx.export(model, (x,), str(tmp_path / "dynamo.onnx"), opset_version=13)
    assert sum(str(m.message) == UNCALIBRATED_EXPORT_WARNING for m in w) == 1
    ts_pairs = find_pairs(onnx.load(str(tmp_path / "ts.onnx")))
    assert sorted(ts_pairs) == [("1.out.conv", "1.cv3.conv"), ("1.out.conv", "1.cv5.conv"),  # Concat inputs
                                ("2.cv1.conv", "2.cv2.conv")]  # the MaxPool rule
    assert sorted(find_pairs(onnx.load(str(tmp_path / "dynamo.onnx")))) == sorted(ts_pairs)
    assert all(q.amax is None for q in quantizers(model))
