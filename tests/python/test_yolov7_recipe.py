"""examples/yolov7/qat_recipe.py, every step on the YOLO-like network: prepare (BN fold, head kept
float, shared scales), mse calibration, sensitivity, feature-distillation QAT, QDQ export."""
import copy
import os
import sys

import onnx
import pytest
import torch

import torchqat
from torchqat import nn as quant_nn, tools

import ort_check
import yolo_like

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "yolov7"))
import qat_recipe  # noqa: E402


def _batches(n, seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, size, size, generator=g) for _ in range(n)]


@pytest.fixture()
def prepared():
    model = yolo_like.make_model()
    float_model = copy.deepcopy(model)
    example = torch.rand(1, 3, 64, 64)
    report = qat_recipe.prepare(model, example, exclude=["detect.*"])
    return model, float_model, report


def test_prepare_folds_bn_keeps_head_float_and_shares_concat_scales(prepared):
    model, float_model, report = prepared
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(type(m) is torch.nn.Conv2d for m in model.detect.m)
    convs = [m for n, m in model.named_modules() if isinstance(m, quant_nn.QuantConv2d)]
    assert len(convs) > 40
    assert convs[0]._input_quantizer._calibrator.__class__.__name__ == "HistogramCalibrator"
    assert len(report.groups) >= 10
    # With quantizers off, the folded quantized model computes the float model.
    for m in model.modules():
        if isinstance(m, quant_nn.TensorQuantizer):
            m.disable()
    x = torch.rand(2, 3, 64, 64)
    for a, b in zip(model(x), float_model(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_calibrate_sensitivity_finetune_export(prepared, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, float_model, _ = prepared
    qat_recipe.calibrate(model, _batches(3), num_batches=3, method="mse", progress=False)
    quantizers = [m for m in model.modules() if isinstance(m, quant_nn.TensorQuantizer)]
    assert all(q.amax is not None and torch.isfinite(q.amax).all() for q in quantizers)

    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = [t.clone() for t in float_model(x)]

    def score(m):
        with torch.no_grad():
            return -sum(float(torch.nn.functional.mse_loss(a, b)) for a, b in zip(m(x), ref))

    table, top = qat_recipe.sensitivity(model, score, top=3, plot=str(tmp_path / "sens.png"))
    assert len(top) == 3 and top[0] == table.rows[0].layer
    assert (tmp_path / "sens.png").read_bytes()[:4] == b"\x89PNG"

    layers = ["backbone.*", "sppcspc", "elan_*"]
    train = _batches(4, seed=1)

    def distill_loss(teacher=None):  # the objective finetune minimises, on its own batches
        probe = tools.FeatureDistillationLoss(model, teacher=teacher, layers=layers)
        model.eval()
        with torch.no_grad():
            value = sum(float(probe(b)) for b in train)
        probe.remove()
        return value, probe.teacher

    before, teacher = distill_loss()
    epochs_seen = []
    # The recipe's learning-rate scale (1e-5 .. 1e-6): larger Adam steps overshoot the
    # quantization grid of this small, randomly initialised network.
    history = qat_recipe.finetune(model, train, epochs=2, iters_per_epoch=4, lr_schedule={0: 1e-5, 1: 1e-6},
                                  layers=layers, on_epoch_end=lambda e, m: epochs_seen.append(e))
    assert epochs_seen == [0, 1] and len(history) == 2 and all(h == h and h >= 0 for h in history)
    after, _ = distill_loss(teacher)
    assert after < 0.97 * before  # distillation pulls the quantized features towards the float ones
    # distillation's hooks removed (safe to save / export); the residual skip quantizer's hook stays
    assert not [h for m in model.modules() for h in m._forward_hooks.values()
                if not isinstance(h, torchqat.residual.SkipQuantHook)]

    path = qat_recipe.export(model, str(tmp_path / "yolo.onnx"), torch.rand(1, 3, 64, 64))
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    outs = ort_check.session(path).run(None, {"images": x.numpy()})  # batch 2 through a batch-1 export
    with torch.no_grad():
        want = [w.numpy() for w in model(x)]
    # Within one output step everywhere (ort_check.py says why). After QAT the finetuned weights put
    # more intermediates near rounding ties, so fewer elements are exact to 1e-6 than on the export
    # tests' models: measured 93 / 82 / 50 % for the three outputs, while the same graph with its
    # first activation scale 1 % off leaves 62 / 46 / 3 %. 30 % separates the two.
    ort_check.assert_matches(outs, want, min_exact=0.3)
    wrong = ort_check.with_scale(proto, ort_check.activation_scales(proto)[0], 1.01)
    with pytest.raises(AssertionError):
        ort_check.assert_matches(ort_check.session(wrong).run(None, {"images": x.numpy()}), want, min_exact=0.3)
    cmd = qat_recipe.trtexec_command(path, imgsz=64)
    assert cmd.startswith("trtexec --onnx=") and "--int8" in cmd and "images:1x3x64x64" in cmd
