"""BN folding: weights and bias exact to fp32 rounding, traced and Sequential pairs, into QuantConv."""
import pytest
import torch
from torch import nn

import torchqat
from torchqat import bn_fold
from torchqat import nn as quant_nn
from torchqat import ops

import yolo_like


def _random_bn(bn, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(bn.num_features, generator=g))
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.1)
    return bn.eval()


def _reference(conv, bn, axis=0):
    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shape = [1] * conv.weight.dim()
    shape[axis] = -1
    w = (conv.weight.double() * s.reshape(shape)).float()
    b0 = conv.bias.double() if conv.bias is not None else torch.zeros_like(s)
    b = ((b0 - bn.running_mean.double()) * s + bn.bias.double()).float()
    return w, b


@pytest.mark.parametrize("bias", [False, True])
def test_sequential_conv_bn_fold_is_exact(bias):
    conv = nn.Conv2d(3, 6, 3, padding=1, bias=bias)
    bn = _random_bn(nn.BatchNorm2d(6))
    model = nn.Sequential(conv, bn, nn.ReLU()).eval()
    w_ref, b_ref = _reference(conv, bn)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y_ref = model(x)
    weight_param = conv.weight
    torchqat.fold_bn(model)
    assert isinstance(model[1], nn.Identity)
    assert model[0].weight is weight_param  # same Parameter object, values changed in place
    assert torch.equal(model[0].weight, w_ref) and torch.equal(model[0].bias, b_ref)
    with torch.no_grad():
        assert torch.allclose(model(x), y_ref, rtol=1e-5, atol=1e-5)


def test_traced_pairs_in_the_yolo_like_net():
    model = yolo_like.make_model()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    with pytest.warns(UserWarning, match="torch.fx could not trace YoloLike.*only conv\\+BN pairs inside nn.Sequential"):
        seq_only = bn_fold.find_conv_bn_pairs(model)  # the route table's control flow stops fx
    assert seq_only == []  # ConvBNAct is not a Sequential
    pairs = bn_fold.find_conv_bn_pairs(model, example_inputs=x)  # a recorded run sees every pair
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert len(pairs) == n_bn and ("backbone.elan2.cv1.conv", "backbone.elan2.cv1.bn") in pairs
    torchqat.fold_bn(model, example_inputs=x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        out = model(x)
    for a, b in zip(out, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_read_twice_is_not_folded():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = _random_bn(nn.BatchNorm2d(2))

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = Net().eval()
    assert bn_fold.find_conv_bn_pairs(model) == []
    assert bn_fold.find_conv_bn_pairs(model, example_inputs=torch.randn(1, 2, 3, 3)) == []
    torchqat.fold_bn(model)
    assert isinstance(model.bn, nn.BatchNorm2d)


def test_fold_into_quant_conv_rescales_per_channel_weight_amax():
    conv = quant_nn.QuantConv2d(3, 4, 3)
    bn = _random_bn(nn.BatchNorm2d(4), seed=1)
    w = conv.weight.detach().clone()
    conv._weight_quantizer.amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    conv._input_quantizer.amax = 3.0
    model = nn.Sequential(conv, bn).eval()
    x = torch.randn(1, 3, 6, 6)
    w_ref, b_ref = _reference(conv, bn)
    s = (bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)).abs()
    torchqat.fold_bn(model)
    assert torch.equal(conv.weight, w_ref) and torch.equal(conv.bias, b_ref)
    amax = conv._weight_quantizer.amax
    assert amax.shape == (4, 1, 1, 1)
    assert torch.allclose(amax, w.abs().amax(dim=(1, 2, 3), keepdim=True) * s.float().reshape(4, 1, 1, 1))
    expected = nn.functional.conv2d(ops.fake_quant(x, torch.tensor(3.0)), ops.fake_quant(conv.weight, amax), conv.bias)
    assert torch.equal(model(x), expected)


def test_conv_transpose_and_linear_fold():
    ct = nn.ConvTranspose2d(4, 6, 3, stride=2)
    bn = _random_bn(nn.BatchNorm2d(6), seed=2)
    model = nn.Sequential(ct, bn, nn.Flatten(), nn.Linear(6 * 9 * 9, 5), _random_bn(nn.BatchNorm1d(5), 3)).eval()
    x = torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        ref = model(x)
    w_ref, _ = _reference(ct, bn, axis=1)
    torchqat.fold_bn(model)
    assert torch.equal(model[0].weight, w_ref)
    assert isinstance(model[1], nn.Identity) and isinstance(model[4], nn.Identity)
    with torch.no_grad():
        assert torch.allclose(model(x), ref, rtol=1e-4, atol=1e-4)


def test_bad_inputs():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        torchqat.fold_bn("model")
    with pytest.raises(ValueError, match="4 features, the layer 3 outputs"):
        bn_fold.fold_conv_bn(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(4))
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.warns(UserWarning, match="no running statistics"):
        torchqat.fold_bn(model)
    assert isinstance(model[1], nn.BatchNorm2d)
