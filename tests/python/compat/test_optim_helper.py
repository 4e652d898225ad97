"""torchqat.optim.helper: pytorch-quantization's parameter grouping, freezing and in-place weight quantization."""
import pytest
import torch
from torch import nn

from torchqat import nn as quant_nn
from torchqat import ops
from torchqat.optim import helper


def _model():
    return nn.Sequential(quant_nn.QuantConv2d(2, 3, 3), nn.BatchNorm2d(3), quant_nn.QuantLinear(4, 2))


def test_match_parameters_searches_names():
    m = _model()
    got = list(helper.match_parameters(m, [r"^0\.", "bias"]))
    want = [m[0].weight, m[0].bias, m[0].bias, m[1].bias, m[2].bias]  # once per matching pattern
    assert len(got) == len(want) and all(g is w for g, w in zip(got, want))


def test_group_parameters_builds_optimizer_groups():
    m = _model()
    groups = helper.group_parameters(m, [["weight"], ["bias"]], lrs=[0.1, 0.2], momentums=[0.9, 0.8],
                                     weight_decays=[1e-4, 0.0])
    assert [g["lr"] for g in groups] == [0.1, 0.2] and [g["momentum"] for g in groups] == [0.9, 0.8]
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    opt = torch.optim.SGD(groups, lr=1.0)
    assert len(opt.param_groups[0]["params"]) == 3 and len(opt.param_groups[1]["params"]) == 3


@pytest.mark.parametrize("kw, msg", [({"lrs": [0.1]}, r"len\(lrs\) must match"),
                                     ({"momentums": [0.1, 0.2, 0.3]}, r"len\(momentums\) must match"),
                                     ({"weight_decays": []}, r"len\(weight_decays\) must match")])
def test_group_parameters_length_errors(kw, msg):
    with pytest.raises(TypeError, match=msg):
        helper.group_parameters(_model(), [["weight"], ["bias"]], **kw)


def test_group_parameters_needs_lists_of_patterns():
    with pytest.raises(TypeError, match="patterns_list must be list of list of patterns"):
        helper.group_parameters(_model(), ["weight"])


def test_freeze_parameters():
    m = _model()
    helper.freeze_parameters(m, [r"^1\."])
    assert [p.requires_grad for p in m.parameters()] == [True, True, False, False, True, True]


def test_quant_weight_inplace_writes_the_quantized_weight():
    m = _model()
    m[0]._weight_quantizer.amax = m[0].weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True) / 2
    w0 = m[0].weight.detach().clone()
    w2 = m[2].weight.detach().clone()
    bn = m[1].weight.detach().clone()
    helper.quant_weight_inplace(m)
    ref = torch.fake_quantize_per_channel_affine(
        w0, (m[0]._weight_quantizer.amax / 127).reshape(-1), torch.zeros(3, dtype=torch.int32), 0, -128, 127)
    assert (m[0].weight.detach() - ref).abs().max() <= m[0]._weight_quantizer.amax.max() / 127 * 1.0001
    assert torch.equal(m[0].weight.detach(), ops.fake_quant(w0, m[0]._weight_quantizer.amax, axis=0))
    assert not torch.equal(m[0].weight.detach(), w0)
    assert torch.equal(m[2].weight.detach(), ops.fake_quant(w2, w2.abs().amax(dim=1, keepdim=True), axis=0))
    assert torch.equal(m[1].weight.detach(), bn)  # no weight quantizer: untouched
