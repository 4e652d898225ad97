"""tensor_quant's functions and QuantDescriptor as pytorch-quantization's behave, on small inputs of our own."""
import numpy as np
import pytest
import torch

import torchqat
from torchqat import tensor_quant
from torchqat.tensor_quant import QuantDescriptor


@pytest.mark.parametrize("fn", [tensor_quant.fake_tensor_quant, tensor_quant.legacy_fake_tensor_quant])
def test_fake_tensor_quant_gives_no_gradient_to_amax(fn):
    # amax computed from x (x.abs().max() / 2, as scripts write it): pytorch-quantization's STE
    # returns None for amax, so x gets the masked gradient only, nothing through amax's max().
    x = torch.tensor([[0.9, -0.2, 0.1], [0.3, -2.0, 0.05]], requires_grad=True)
    amax = x.abs().max() / 2  # 1.0: -2.0 is outside the range
    fn(x, amax).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))


def test_scaled_e4m3_gives_no_gradient_to_amax():
    x = torch.tensor([0.5, -3.0, 1.0], requires_grad=True)
    tensor_quant.scaled_e4m3(x, x.abs().max() / 2).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 0.0, 1.0]))


def test_learn_amax_with_axis_is_refused():
    # The learned range (TensorQuantizer.clip) is one number: an axis would be ignored.
    with pytest.raises(TypeError, match="axis is ignored and must be None when learn_amax is true"):
        QuantDescriptor(axis=(0,), amax=0.5, learn_amax=True)
    assert QuantDescriptor(amax=0.5, learn_amax=True).learn_amax


def test_to_yaml_from_yaml_round_trip():
    d = QuantDescriptor(num_bits=4, name="w", axis=(0, 2), amax=[0.5, 0.25], unsigned=True)
    text = d.to_yaml()
    assert isinstance(text, str) and "num_bits: 4" in text and "axis:" in text
    back = QuantDescriptor.from_yaml(text)
    assert back == d and back.axis == (0, 2) and isinstance(back.amax, np.ndarray)
    plain = QuantDescriptor(num_bits=6, amax=0.125)
    assert QuantDescriptor.from_yaml(plain.to_yaml()) == plain
    e4m3 = QuantDescriptor(num_bits=(4, 3))
    assert QuantDescriptor.from_yaml(e4m3.to_yaml()).num_bits == (4, 3)


@pytest.mark.parametrize("make, torch_kw", [
    (lambda **k: torchqat.nn.QuantConv2d(2, 3, 3, **k), {"device": "cpu"}),
    (lambda **k: torchqat.nn.QuantConvTranspose1d(2, 3, 3, **k), {"dtype": torch.float32}),
    (lambda **k: torchqat.nn.QuantLinear(2, 3, **k), {"device": "cpu"}),
    (lambda **k: torchqat.nn.QuantAvgPool2d(2, **k), {"ceil_mode": True}),
])
def test_quant_module_unknown_keyword_is_unused_keys(make, torch_kw):
    # pytorch-quantization's pop_quant_desc_in_kwargs: a keyword that is neither a descriptor nor
    # the float module's own is TypeError("Unused keys: ...").
    with pytest.raises(TypeError, match=r"Unused keys: \['desc'\]"):
        make(desc=QuantDescriptor())
    m = make(quant_desc_input=QuantDescriptor(num_bits=6), **torch_kw)  # the float module's keywords still pass
    assert m._input_quantizer.num_bits == 6


@pytest.mark.parametrize("bad", [-10.0, 110.0])
def test_percentile_error_says_range(bad):
    # pytorch-quantization: ValueError("Invalid percentile. Must be in range 0 <= percentile <= 100.")
    cal = torchqat.calib.HistogramCalibrator(8, None, False)
    cal.collect(torch.rand(100))
    with pytest.raises(ValueError, match="range"):
        cal.compute_amax("percentile", percentile=bad)


def test_load_calib_amax_without_data_says_calibrator_returned_none():
    q = torchqat.nn.TensorQuantizer(QuantDescriptor(axis=(0,)))
    q.enable_calib()
    with pytest.raises(RuntimeError, match="Calibrator returned None"):
        q.load_calib_amax()


def test_tensor_quant_is_differentiable_with_the_ste_mask():
    # pytorch-quantization's TensorQuantFunction: the integer-valued outputs pass grad_outputs back
    # where |x| <= amax (the STE of fake quant), nothing to amax.
    x = torch.tensor([[0.9, -0.2, 0.1], [0.3, -2.0, 0.05]], requires_grad=True)
    amax = x.abs().max() / 2
    q, scale = tensor_quant.tensor_quant(x, amax)
    assert torch.equal(q.detach(), torch.tensor([[114.0, -25.0, 13.0], [38.0, -127.0, 6.0]]))
    assert scale.item() == pytest.approx(127.0) and not scale.requires_grad
    g = torch.arange(6.0).view(2, 3)
    q.backward(g)
    assert torch.equal(x.grad, g * torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))


def test_tensor_quant_half_and_per_channel_gradient():
    x = torch.tensor([[0.5, -1.5], [0.25, 0.75]], dtype=torch.float16, requires_grad=True)
    amax = torch.tensor([[1.0], [0.5]], dtype=torch.float16)
    q, _ = tensor_quant.tensor_quant(x, amax, 8, False, False)
    assert q.dtype == torch.float16
    q.sum().backward()
    assert x.grad.dtype == torch.float16
    assert torch.equal(x.grad, torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float16))


def test_fake_affine_tensor_quant_grid_and_gradient():
    # [min, max] = [-1, 2] in 2 bits: step 1, the 4 levels -1, 0, 1, 2 (half-even ties)
    x = torch.tensor([-3.0, -1.0, -0.5, 0.4, 0.5, 1.5, 1.9, 2.0, 5.0], requires_grad=True)
    y = tensor_quant.fake_affine_tensor_quant(x, torch.tensor(-1.0), torch.tensor(2.0), 2)
    assert torch.equal(y.detach(), torch.tensor([-1.0, -1.0, -0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]))
    # a range that does not hold 0 keeps its own grid: [0.5, 2] in 8 bits reproduces those ends
    z = tensor_quant.fake_affine_tensor_quant(torch.tensor([0.0, 0.5, 2.0, 3.0]), 0.5, 2.0)
    assert torch.allclose(z, torch.tensor([0.5, 0.5, 2.0, 2.0]), atol=1e-6)
    # 8 bits over [-128, 127]: step 1, so integers come back unchanged; fp16 in, fp16 out
    ints = torch.tensor([-128.0, -101.0, -1.0, 0.0, 5.0, 93.0, 127.0], dtype=torch.float16)
    out = tensor_quant.fake_affine_tensor_quant(ints, ints.min(), ints.max())
    assert out.dtype == torch.float16 and torch.equal(out, ints)


def test_fake_affine_tensor_quant_single_point_range():
    y = tensor_quant.fake_affine_tensor_quant(torch.tensor([-1.0, 0.0, 3.0]), 0.25, 0.25)
    assert torch.equal(y, torch.full((3,), 0.25))
