"""calibrate(method="auto"): per activation quantizer, the candidate amax with the least output error of
its layer, checked against a plain reference built from torch's own fake-quant ops."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchqat
from torchqat import calib
from torchqat.calib.auto import AUTO_CANDIDATES
from torchqat.demo import data as demo_data
from torchqat.demo import model as demo_model
from torchqat.demo import quantize as demo_quantize


def _fq(x, amax):
    return torch.fake_quantize_per_tensor_affine(x, float(amax) / 127, 0, -128, 127)


def _spiky_batches(n=3, seed=0):
    """Inputs like a normalised image: most values one background level, a thin foreground up to 3."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.full((8, 2, 12, 12), -0.8)
        fg = torch.rand(x.shape, generator=g) < 0.15
        x[fg] = torch.rand(int(fg.sum()), generator=g) * 3.8 - 0.8
        out.append(x)
    return out


def test_auto_keeps_the_candidate_with_the_least_layer_error_of_a_plain_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3)).eval()
    torchqat.quantize_model(model)
    batches = _spiky_batches()
    report = calib.calibrate_auto(model, batches, progress=False, auto_batches=2)
    conv = model[0]
    (choice,) = [c for c in report if c.quantizer == "0._input_quantizer"]
    # Reference: the weight as torch fake-quantizes it per channel, the input at each candidate amax.
    w_amax = conv._weight_quantizer.amax.reshape(-1)
    wq = torch.fake_quantize_per_channel_affine(conv.weight.detach(), w_amax / 127, torch.zeros(4, dtype=torch.int32),
                                                0, -128, 127)
    ref_err = {}
    for label, (amax, _) in choice.errors.items():
        err = 0.0
        for x in batches[:2]:
            y_ref = F.conv2d(x, wq, conv.bias.detach())
            y = F.conv2d(_fq(x, amax), wq, conv.bias.detach())
            err += float((y - y_ref).square().mean())
        ref_err[label] = err
        assert choice.errors[label][1] == pytest.approx(err, rel=1e-5), label
    best = min(ref_err, key=ref_err.get)
    assert choice.method == best
    assert conv._input_quantizer.amax.item() == pytest.approx(choice.errors[best][0], rel=0, abs=0)
    # Every candidate of the rule was tried, and the amax equals that search's own result.
    assert set(choice.errors) == {label for label, _, _ in AUTO_CANDIDATES}


def test_candidates_are_the_histogram_searches_of_the_same_statistics():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3)).eval()
    torchqat.quantize_model(model)
    batches = _spiky_batches(seed=3)
    report = calib.calibrate_auto(model, batches, progress=False)
    (choice,) = list(report)
    cal = calib.HistogramCalibrator(8, None, False)
    for x in batches:
        cal.collect(x)
    for label, method, kw in AUTO_CANDIDATES:
        assert choice.errors[label][0] == float(cal.compute_amax(method, **kw)), label


def test_calibrate_auto_sets_every_quantizer_and_weights_keep_max():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3)).eval()
    torchqat.quantize_model(model)
    batches = _spiky_batches()
    torchqat.calibrate(model, batches, method="auto", progress=False)
    for q in (model[0]._input_quantizer, model[3]._input_quantizer):
        assert q.amax is not None and q.amax.numel() == 1 and q.amax.item() > 0
    w = model[0].weight.detach()
    torch.testing.assert_close(model[0]._weight_quantizer.amax.reshape(-1), w.abs().amax(dim=(1, 2, 3)),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="method 'auto' measures each candidate"):
        calib.compute_amax(model, method="auto")


def test_auto_never_keeps_entropys_clipped_amax_for_the_demo_first_layer():
    """The demo's first conv reads images whose background is one value: entropy clips the foreground."""
    x, y = demo_data.load_split("train", limit=512)
    model = demo_quantize.quantize(demo_model.FashionResNet(width=8).eval())
    data = list(demo_data.batches(x, y, 128))
    report = calib.calibrate_auto(model, data, progress=False)
    first = next(c for c in report if c.quantizer == "conv1._input_quantizer")
    entropy_amax = first.errors["entropy"][0]
    assert entropy_amax < 0.5 * first.errors["max"][0], "premise: entropy clips this layer's input"
    assert first.method != "entropy"
    assert model.conv1._input_quantizer.amax.item() > entropy_amax
    text = str(report)
    assert "conv1._input_quantizer" in text and first.method in text
