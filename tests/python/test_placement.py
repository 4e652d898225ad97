"""Placement: share_scales gives one quantizer to every concat group, MP block, SPPCSPC and residual add."""
import operator

import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat import calib, placement

import yolo_like


X = torch.randn(1, 3, 64, 64)


def quantized_yolo(custom=None):
    model = yolo_like.make_model()
    torchqat.quantize_model(model, exclude=["detect"], custom_quant_modules=custom)
    return model


class _CatSpy(torch.overrides.TorchFunctionMode):
    """Records every torch.cat call: (output, inputs) (the tensors are kept, so ids stay unique)."""

    def __init__(self):
        super().__init__()
        self.cats = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.cat:
            self.cats.append((out, list(args[0])))
        return out


def input_quantizer_readers(model, x):
    """([(cat output, cat inputs)], {id(tensor): [quantizer objects reading it]}), found by running the
    model with forward pre-hooks, independently of torchqat.placement."""
    readers, keep, handles = {}, [], []

    def pre(m, args):
        keep.append(args)
        if isinstance(m, quant_nn.QuantAdd):
            readers.setdefault(id(args[0]), []).append(m._input0_quantizer)
            readers.setdefault(id(args[1]), []).append(m._input1_quantizer)
        elif hasattr(m, "_input_quantizer"):
            readers.setdefault(id(args[0]), []).append(m._input_quantizer)

    for m in model.modules():
        if isinstance(m, (quant_nn.QuantAdd, quant_nn.QuantConv2d, quant_nn.QuantMaxPool2d)):
            handles.append(m.register_forward_pre_hook(pre))
    spy = _CatSpy()
    try:
        with torch.no_grad(), spy:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return spy.cats, readers


def test_every_concat_of_the_yolo_like_net_has_one_shared_scale():
    model = quantized_yolo()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(RuntimeError, match="torch.fx could not trace YoloLike.*example_inputs"):
        placement.share_scales(model)  # the route table's input check is control flow fx cannot follow
    report = placement.share_scales(model, x)
    cats, readers = input_quantizer_readers(model, x)
    assert len(cats) == 17 + 3  # the detect head (float, run last) decodes with 3 more
    for i, (out, ins) in enumerate(cats[:17]):
        quantizers = list(readers.get(id(out), []))
        for t in ins:
            quantizers += readers.get(id(t), [])
        assert quantizers, f"cat {i} has no quantized reader"
        assert all(q is quantizers[0] for q in quantizers), f"cat {i}: {len({id(q) for q in quantizers})} scales"
    assert len(report) >= 10 and "concat" in str(report)
    assert report.leaf_modules == []


def test_elan_mp_sppcspc_and_upsample_groups():
    model = quantized_yolo(custom={nn.MaxPool2d: quant_nn.QuantMaxPool2d})
    placement.share_scales(model, X)
    e = model.backbone.elan3
    q = e.out.conv._input_quantizer
    assert e.cv3.conv._input_quantizer is q and e.cv5.conv._input_quantizer is q  # convs reading concat inputs
    assert e.cv1.conv._input_quantizer is not q
    h = model.elan_h4
    assert all(getattr(h, c).conv._input_quantizer is h.out.conv._input_quantizer for c in ("cv3", "cv4", "cv5", "cv6"))
    mp = model.backbone.mp4  # MaxPool branch and strided-conv branch read the same tensor
    assert mp.cv1.conv._input_quantizer is mp.cv2.conv._input_quantizer is mp.mp._input_quantizer
    s = model.sppcspc  # identity + 5/9/13 maxpools into one concat
    assert all(m._input_quantizer is s.cv5.conv._input_quantizer for m in s.m)
    # the head's MP block also reads h3, which the lateral and output convs read
    assert model.mp_h4.cv2.conv._input_quantizer is model.out3.conv._input_quantizer


def test_mp_rule_without_quantized_maxpool():
    model = quantized_yolo()
    report = placement.share_scales(model, X)
    mp = model.backbone.mp3
    assert mp.cv1.conv._input_quantizer is mp.cv2.conv._input_quantizer
    group = report.group_of("backbone.mp3.cv1.conv._input_quantizer")
    assert group is not None and "maxpool" in group.rules


def test_residual_quant_add_shares_with_the_residual_readers():
    model = quantized_yolo(custom={yolo_like.Add: quant_nn.QuantAdd})
    add = model.backbone.res.add
    add._input1_quantizer = quant_nn.TensorQuantizer()  # make them separate first
    report = placement.share_scales(model, X)
    assert add._input0_quantizer is add._input1_quantizer is model.backbone.res.cv1.conv._input_quantizer
    assert "add" in report.group_of("backbone.res.add._input1_quantizer").rules


def test_state_dict_keys_survive_sharing_and_round_trip():
    model = quantized_yolo()
    keys_before = set(model.state_dict())
    placement.share_scales(model, X)
    calib.calibrate_weights(model, method="max")  # per channel, [K,1,1,1]
    for m in model.modules():
        if isinstance(m, quant_nn.TensorQuantizer) and m.amax is None:
            m.amax = 1.5
    sd = model.state_dict()
    assert set(sd) - keys_before == {k for k in sd if k.endswith("._amax")}
    assert "backbone.elan3.cv3.conv._input_quantizer._amax" in sd
    assert sd["backbone.elan3.out.conv._weight_quantizer._amax"].shape[1:] == (1, 1, 1)
    fresh = quantized_yolo()
    placement.share_scales(fresh, X)
    fresh.load_state_dict(sd)
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(model(x), fresh(x)))


def test_calibrated_amax_merges_to_the_largest_and_dry_run_changes_nothing():
    model = quantized_yolo()
    e = model.backbone.elan2
    e.out.conv._input_quantizer.amax = 1.0
    e.cv3.conv._input_quantizer.amax = 3.0
    dry = placement.share_scales(model, X, dry_run=True)
    assert not dry.applied and e.cv3.conv._input_quantizer is not e.out.conv._input_quantizer
    assert "dry run" in str(dry)
    report = placement.share_scales(model, X)
    assert e.cv3.conv._input_quantizer is e.out.conv._input_quantizer
    assert e.out.conv._input_quantizer.amax.item() == 3.0
    assert [g.members for g in report] == [g.members for g in dry]
    again = placement.share_scales(model, X)  # idempotent
    assert [g.members for g in again] == [g.members for g in report]
    assert placement.shared_quantizers(model)


def test_disabled_and_incompatible_quantizers_are_left_alone():
    model = quantized_yolo()
    e = model.backbone.elan2
    e.cv3.conv._input_quantizer.disable()
    e.cv5.conv._input_quantizer = quant_nn.TensorQuantizer(quant_nn.QuantConv2d.default_quant_desc_input.replace(
        num_bits=4))
    report = placement.share_scales(model, X)
    assert e.cv3.conv._input_quantizer is not e.out.conv._input_quantizer
    assert e.cv5.conv._input_quantizer is not e.out.conv._input_quantizer
    reasons = dict(report.skipped)
    assert "disabled" in reasons["backbone.elan2.cv3.conv._input_quantizer"]
    assert "num_bits 4" in reasons["backbone.elan2.cv5.conv._input_quantizer"]


class _Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent: fx cannot trace this
            return x
        return -x


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = quant_nn.QuantConv2d(2, 2, 1)
        self.b = quant_nn.QuantConv2d(2, 2, 1)
        self.gate = _Gate()
        self.c = quant_nn.QuantConv2d(4, 2, 1)

    def forward(self, x):
        y = self.gate(x)
        return self.c(torch.cat([self.a(y), self.b(y)], 1))


def test_untraceable_submodule_becomes_a_leaf_and_root_failure_is_clear():
    model = _Untraceable()
    report = placement.share_scales(model)  # fx: the gate becomes an opaque leaf
    assert report.leaf_modules == ["gate"] and "gate" in str(report)
    assert report.groups == [] or all("c._input_quantizer" in g.members for g in report.groups)
    assert placement.share_scales(model, torch.randn(1, 2, 4, 4)).leaf_modules == []  # a recorded run needs none

    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = quant_nn.QuantConv2d(2, 2, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(RuntimeError, match="torch.fx could not trace Root.*leaf_modules"):
        placement.share_scales(Root())
    assert placement.share_scales(Root(), torch.ones(1, 2, 2, 2)).groups == []  # recorded: runs
    with pytest.raises(ValueError, match="unknown rules"):
        placement.share_scales(model, rules=["concat", "reshape"])


def test_float_add_and_functional_ops_are_followed():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = quant_nn.QuantConv2d(2, 2, 1)
            self.c2 = quant_nn.QuantConv2d(2, 2, 1)
            self.c3 = quant_nn.QuantConv2d(4, 2, 1)
            self.c4 = quant_nn.QuantConv2d(2, 2, 1)

        def forward(self, x):
            p = nn.functional.max_pool2d(x, 2)
            y = torch.cat([self.c1(p), nn.functional.interpolate(self.c2(p), scale_factor=1.0)], dim=1)
            z = self.c3(y.contiguous())
            return operator.add(z, self.c4(x))

    model = Net()
    placement.share_scales(model)
    assert model.c1._input_quantizer is model.c2._input_quantizer  # two readers of one MaxPool output
    assert model.c4._input_quantizer is model.c1._input_quantizer  # MaxPool input reader (MP rule)
