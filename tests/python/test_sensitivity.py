"""Sensitivity analysis, partial quantization and the feature-distillation loss."""
import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat import placement
from torchqat import tools

import yolo_like


class ThreeLayers(nn.Module):
    """Layer 'b' is quantized to 2 bits, so it is by far the most sensitive."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 4)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def _model():
    model = ThreeLayers()
    torchqat.quantize_model(model, {"quant_cfg": {"b.*": {"num_bits": 2}}})
    return model


X = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))


def _quantizer_state(model):
    return [(n, id(m), m._disabled) for n, m in model.named_modules(remove_duplicate=False)
            if isinstance(m, quant_nn.TensorQuantizer)]


@pytest.mark.parametrize("mode", ["one_at_a_time", "all_but_one"])
def test_sensitivity_ranks_the_2bit_layer_first_and_restores_the_model(mode, tmp_path):
    model = _model()
    with torch.no_grad():
        ref = ThreeLayers()(X)

    def neg_mse(m):
        with torch.no_grad():
            return -nn.functional.mse_loss(m(X), ref)

    before = _quantizer_state(model)
    png = tmp_path / "sens.png"
    table = tools.sensitivity(model, neg_mse, mode=mode, plot=png)
    assert _quantizer_state(model) == before
    assert [r.rank for r in table] == [1, 2, 3] and table[0].layer == "b"
    assert table.float_score == pytest.approx(0.0, abs=1e-10)
    assert table.quant_score < table.float_score
    assert "rank" in str(table) and "b" in str(table)
    assert table.to_dicts()[0]["layer"] == "b"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    loss_table = tools.sensitivity(model, lambda m: -neg_mse(m), mode=mode, higher_is_better=False)
    assert loss_table.most_sensitive(1) == ["b"]


def test_partial_quantize_keeps_the_most_sensitive_layers_float():
    model = _model()
    with torch.no_grad():
        ref = ThreeLayers()(X)
    names = tools.partial_quantize(model, lambda m: -float(nn.functional.mse_loss(m(X), ref)), n=1)
    assert names == ["b"]
    assert model.b._input_quantizer._disabled and model.b._weight_quantizer._disabled
    assert not model.a._input_quantizer._disabled and not model.c._weight_quantizer._disabled
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        tools.partial_quantize(model, lambda m: 0.0, n=-1)


def test_shared_quantizers_are_isolated_per_layer():
    model = yolo_like.make_model()
    torchqat.quantize_model(model, exclude=["detect"])
    placement.share_scales(model, torch.rand(1, 3, 64, 64))
    e = model.backbone.elan2
    shared = e.out.conv._input_quantizer
    assert e.cv3.conv._input_quantizer is shared
    table = tools.SensitivityTable("all_but_one", 0.0, 0.0,
                                   [tools.SensitivityRow(1, "backbone.elan2.cv3.conv", 0.0, 1.0)])
    assert tools.partial_quantize(model, n=1, table=table) == ["backbone.elan2.cv3.conv"]
    assert e.cv3.conv._input_quantizer._disabled and e.cv3.conv._input_quantizer is not shared
    assert not shared._disabled and e.out.conv._input_quantizer is shared


def test_sensitivity_bad_inputs():
    model = _model()
    with pytest.raises(ValueError, match="mode must be one of"):
        tools.sensitivity(model, lambda m: 0.0, mode="leave_one_out")
    with pytest.raises(TypeError, match="eval_fn must return a number"):
        tools.sensitivity(model, lambda m: "good")
    with pytest.raises(ValueError, match="matches no quantized layer"):
        tools.sensitivity(model, lambda m: 0.0, layers=["zzz*"])
    with pytest.raises(ValueError, match="no enabled quantizers"):
        tools.sensitivity(ThreeLayers(), lambda m: 0.0)


# ----- feature distillation ---------------------------------------------------------------------

def test_feature_distillation_loss_is_zero_for_float_and_trains_the_student():
    student = yolo_like.make_model()
    torchqat.quantize_model(student, exclude=["detect"])
    x = torch.randn(2, 3, 64, 64)
    with tools.FeatureDistillationLoss(student, layers=["backbone.elan*", "sppcspc", "elan_h*"]) as loss_fn:
        assert loss_fn.layers[0] == "backbone.elan2" and "sppcspc" in loss_fn.layers
        for m in student.modules():
            if isinstance(m, quant_nn.TensorQuantizer):
                m.disable()
        assert loss_fn(x).item() == 0.0  # quantizers off: the student is the float model
        for m in student.modules():
            if isinstance(m, quant_nn.TensorQuantizer):
                m.enable()
        loss = loss_fn(x)
        assert loss.item() > 0 and loss.requires_grad
        loss.backward()
        assert student.backbone.elan2.cv1.conv.weight.grad is not None
        assert all(p.grad is None for p in loss_fn.teacher.parameters())
        student(x)
        with torch.no_grad():
            loss_fn.teacher(x)
        assert torch.allclose(loss_fn.compute(), loss.detach())
    assert not student.backbone.elan2._forward_hooks  # hooks removed on exit
    with pytest.raises(RuntimeError, match="hooks were removed"):
        loss_fn.compute()


def test_feature_distillation_bad_inputs():
    model = ThreeLayers()
    with pytest.warns(UserWarning, match="'zz' matched no module"):
        tools.FeatureDistillationLoss(model, layers=["a", "zz"]).remove()
    with pytest.raises(ValueError, match="matched no module of the student"):
        tools.FeatureDistillationLoss(model, layers="nothing")
    with pytest.raises(ValueError, match="different module object"):
        tools.FeatureDistillationLoss(model, model, layers="a")
    other = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="teacher has no module named 'a'"):
        tools.FeatureDistillationLoss(model, other, layers="a")
    loss_fn = tools.FeatureDistillationLoss(model, layers=["a", "b"])
    model(X)
    with pytest.raises(RuntimeError, match="no teacher output for layer 'a'"):
        loss_fn.compute()
    loss_fn.remove()
