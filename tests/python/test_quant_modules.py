"""Quantized modules: bit-exact against F.conv/F.linear on fake-quantized tensors, and
pytorch-quantization's names, defaults and state-dict keys."""
import pytest
import torch
from torch.nn import functional as F

from torchqat import nn as quant_nn
from torchqat import ops
from torchqat.tensor_quant import QuantDescriptor


def calibrated(mod, in_amax=2.0):
    mod._input_quantizer.amax = in_amax
    w = mod.weight.detach()
    axis = mod._weight_quantizer.axis[0]
    dims = [d for d in range(w.dim()) if d != axis]
    mod._weight_quantizer.amax = w.abs().amax(dim=dims, keepdim=True)
    return mod


def test_conv2d_bit_exact_against_functional():
    m = calibrated(quant_nn.QuantConv2d(3, 8, 3, padding=1, stride=2))
    x = torch.randn(2, 3, 9, 9)
    wa = m._weight_quantizer.amax
    ref = F.conv2d(ops.fake_quant(x, torch.tensor(2.0)), ops.fake_quant(m.weight, wa), m.bias, 2, 1)
    assert torch.equal(m(x), ref)


def test_linear_bit_exact_against_functional():
    m = calibrated(quant_nn.QuantLinear(16, 4))
    x = torch.randn(5, 16)
    assert m._weight_quantizer.amax.shape == (4, 1)
    ref = F.linear(ops.fake_quant(x, torch.tensor(2.0)), ops.fake_quant(m.weight, m._weight_quantizer.amax), m.bias)
    assert torch.equal(m(x), ref)


def test_conv_transpose_weight_axis_1():
    m = calibrated(quant_nn.QuantConvTranspose2d(4, 6, 3, stride=2))
    assert m._weight_quantizer.axis == (1,) and m._weight_quantizer.amax.shape == (1, 6, 1, 1)
    x = torch.randn(1, 4, 5, 5)
    ref = F.conv_transpose2d(ops.fake_quant(x, torch.tensor(2.0)), ops.fake_quant(m.weight, m._weight_quantizer.amax),
                             m.bias, 2)
    assert torch.equal(m(x), ref)


def test_state_dict_keys_match_pytorch_quantization():
    m = torch.nn.Sequential()
    m.add_module("conv1", calibrated(quant_nn.QuantConv2d(3, 8, 3)))
    keys = set(m.state_dict())
    assert keys == {"conv1.weight", "conv1.bias", "conv1._input_quantizer._amax", "conv1._weight_quantizer._amax"}
    assert m.state_dict()["conv1._weight_quantizer._amax"].shape == (8, 1, 1, 1)
    assert m.state_dict()["conv1._input_quantizer._amax"].shape == ()
    fresh = torch.nn.Sequential()
    fresh.add_module("conv1", quant_nn.QuantConv2d(3, 8, 3))
    fresh.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 6, 6)
    assert torch.equal(fresh(x), m(x))


def test_short_aliases_and_defaults():
    assert quant_nn.Conv2d is quant_nn.QuantConv2d and quant_nn.Linear is quant_nn.QuantLinear
    assert quant_nn.MaxPool2d is quant_nn.QuantMaxPool2d and quant_nn.AdaptiveAvgPool2d is quant_nn.QuantAdaptiveAvgPool2d
    m = quant_nn.QuantConv2d(3, 4, 1)
    assert m._input_quantizer.axis is None and m._weight_quantizer.axis == (0,)


def test_set_default_quant_desc_input_applies_to_new_modules():
    old = quant_nn.QuantConv2d.default_quant_desc_input
    try:
        quant_nn.QuantConv2d.set_default_quant_desc_input(QuantDescriptor(calib_method="histogram"))
        assert quant_nn.QuantConv2d(1, 1, 1)._input_quantizer._calib_method == "histogram"
        with pytest.raises(ValueError, match="QuantDescriptor"):
            quant_nn.QuantConv2d.set_default_quant_desc_input("histogram")
    finally:
        quant_nn.QuantConv2d.default_quant_desc_input = old


def test_from_float_copies_weights():
    f = torch.nn.Conv2d(3, 5, 3, bias=True)
    q = quant_nn.QuantConv2d.from_float(f)
    assert torch.equal(q.weight, f.weight) and torch.equal(q.bias, f.bias)
    q._input_quantizer.disable()
    q._weight_quantizer.disable()
    x = torch.randn(1, 3, 7, 7)
    assert torch.equal(q(x), f(x))


def test_invalid_weight_axis_is_an_error():
    with pytest.raises(ValueError, match="axis 4 is out of range"):
        quant_nn.QuantConv2d(3, 4, 3, quant_desc_weight=QuantDescriptor(axis=(4,)))
    with pytest.raises(TypeError, match="Unused keys"):
        quant_nn.pop_quant_desc_in_kwargs(quant_nn.QuantConv2d, foo=1)


def test_quant_add_and_concat_share_quantizers():
    add = quant_nn.QuantAdd()
    assert add._input0_quantizer is add._input1_quantizer
    add._input0_quantizer.amax = 1.0
    a, b = torch.randn(4), torch.randn(4)
    assert torch.equal(add(a, b), ops.fake_quant(a, torch.tensor(1.0)) + ops.fake_quant(b, torch.tensor(1.0)))
    cat = quant_nn.QuantConcat(dim=0)
    cat._input_quantizer.amax = 1.0
    assert torch.equal(cat([a, b]), torch.cat([ops.fake_quant(a, torch.tensor(1.0)), ops.fake_quant(b, torch.tensor(1.0))]))
    with pytest.raises(ValueError, match="non-empty list"):
        cat([])


def test_pooling_quantizes_its_input():
    p = quant_nn.QuantAvgPool2d(2)
    p._input_quantizer.amax = 1.0
    x = torch.randn(1, 2, 4, 4)
    assert torch.equal(p(x), F.avg_pool2d(ops.fake_quant(x, torch.tensor(1.0)), 2))
