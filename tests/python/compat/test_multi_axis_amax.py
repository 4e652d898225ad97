"""amax that varies along several axes: QuantDescriptor(axis=(0, 1)) keeps one amax per (dim 0, dim 1)
pair, as pytorch-quantization's reduce over every dim not in axis. Fake quant, its STE gradient,
quantize/dequantize, max calibration, the state-dict shape and the export refusal, checked against
torch's own per-tensor fake quant applied slice by slice."""
import io
import itertools

import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat.tensor_quant import QuantDescriptor

op = torch.ops.torchqat


def _reference(x, amax):
    """torch.fake_quantize_per_tensor_affine on each slice that shares one amax value."""
    full = amax.expand(x.shape)
    out = torch.empty_like(x)
    for idx in itertools.product(*[range(s) for s in x.shape]):
        a = float(full[idx])
        out[idx] = torch.fake_quantize_per_tensor_affine(x[idx].reshape(1), a / 127, 0, -128, 127)[0]
    return out


def _amax(x, keep):
    return x.abs().amax(dim=[d for d in range(x.dim()) if d not in keep], keepdim=True) * 0.8


LAYOUTS = {
    "contiguous": lambda: torch.randn(4, 3, 2, 5),
    "channels_last": lambda: torch.randn(4, 3, 2, 5).to(memory_format=torch.channels_last),
    "transposed": lambda: torch.randn(3, 4, 2, 5).transpose(0, 1),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("keep", [(0, 1), (0, 2), (1, 3), (0, 1, 3)])
def test_fake_quant_matches_torch_slice_by_slice(layout, keep):
    torch.manual_seed(0)
    x = LAYOUTS[layout]()
    amax = _amax(x, keep)
    y = op.fake_quant(x, amax, 8, False, False, None)
    torch.testing.assert_close(y, _reference(x, amax), atol=1e-6, rtol=0)
    q, step = op.quantize(x, amax, 8, False, False, None)
    assert step.shape == amax.shape
    torch.testing.assert_close(op.dequantize(q, step, None, None), y, atol=0, rtol=0)


@pytest.mark.parametrize("keep", [(0, 1), (0, 2)])
def test_ste_gradient_and_amax_gradient_shape(keep):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 2, 5)
    amax = _amax(x, keep)
    xg, ag = x.clone().requires_grad_(), amax.clone().requires_grad_()
    g = torch.randn_like(x)
    op.fake_quant(xg, ag, 8, False, False, None).backward(g)
    torch.testing.assert_close(xg.grad, torch.where(x.abs() <= amax, g, torch.zeros_like(g)))
    assert ag.grad.shape == amax.shape
    assert torch.isfinite(ag.grad).all() and ag.grad.abs().sum() > 0


def test_amax_dims_must_match_x():
    with pytest.raises(ValueError, match=r"amax of shape \[4, 2, 1\] does not match x of shape \[4, 3, 5\] in dim 1"):
        op.fake_quant(torch.randn(4, 3, 5), torch.ones(4, 2, 1), 8, False, False, None)


def test_quantizer_calibrates_quantizes_and_saves_per_axis_pairs():
    torch.manual_seed(2)
    w = torch.randn(4, 3, 3, 3)
    q = quant_nn.TensorQuantizer(QuantDescriptor(axis=(0, 1)))
    # Dynamic: one amax per (out, in) channel pair from the tensor itself.
    torch.testing.assert_close(q(w), _reference(w, w.abs().amax(dim=(2, 3), keepdim=True)), atol=1e-6, rtol=0)
    q.disable_quant()
    q.enable_calib()
    q(w)
    q(w * 0.5)
    q.load_calib_amax()
    q.disable_calib()
    q.enable_quant()
    want = w.abs().amax(dim=(2, 3), keepdim=True)
    assert q.amax.shape == (4, 3, 1, 1)
    torch.testing.assert_close(q.amax, want)
    assert q.state_dict()["_amax"].shape == (4, 3, 1, 1)
    torch.testing.assert_close(q(w), _reference(w, want), atol=1e-6, rtol=0)
    fresh = quant_nn.TensorQuantizer(QuantDescriptor(axis=(0, 1)))
    fresh.load_state_dict(q.state_dict())
    torch.testing.assert_close(fresh(w), q(w), atol=0, rtol=0)
    assert "axis=(0, 1)" in repr(q)


def test_quant_conv_with_a_two_axis_weight_quantizer_trains():
    torch.manual_seed(3)
    conv = quant_nn.QuantConv2d(3, 4, 3, quant_desc_weight=QuantDescriptor(axis=(0, 1)))
    x = torch.randn(2, 3, 6, 6)
    conv.weight_quantizer.amax = conv.weight.detach().abs().amax(dim=(2, 3), keepdim=True)
    conv.input_quantizer.amax = x.abs().max()
    y = conv(x)
    wq = _reference(conv.weight.detach(), conv.weight_quantizer.amax)
    xq = _reference(x, conv.input_quantizer.amax.reshape(1, 1, 1, 1))
    torch.testing.assert_close(y, nn.functional.conv2d(xq, wq, conv.bias), atol=1e-5, rtol=1e-5)
    y.sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def _calibrated_conv():
    m = nn.Sequential(quant_nn.QuantConv2d(3, 4, 1, quant_desc_weight=QuantDescriptor(axis=(0, 1))))
    m[0].input_quantizer.amax = 1.0
    m[0].weight_quantizer.amax = m[0].weight.detach().abs().amax(dim=(2, 3), keepdim=True)
    return m


def test_every_exporter_refuses_it_naming_the_quantizer():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"0\._weight_quantizer has an amax of shape \(4, 3, 1, 1\)"):
        torchqat.onnx.export(_calibrated_conv(), (x,), io.BytesIO())
    with pytest.raises(ValueError, match=r"0\._weight_quantizer has an amax of shape \[4, 3, 1, 1\]"):
        torch.onnx.export(_calibrated_conv(), (x,), io.BytesIO(), dynamo=False, opset_version=13)
