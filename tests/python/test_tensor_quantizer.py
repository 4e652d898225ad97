"""QuantDescriptor and TensorQuantizer: pytorch-quantization's names, defaults, state machine and keys."""
import copy
import io

import pytest
import torch

from torchqat import nn as quant_nn
from torchqat import ops, tensor_quant
from torchqat.tensor_quant import QuantDescriptor


def test_descriptor_defaults_and_constants():
    d = QuantDescriptor()
    assert (d.num_bits, d.axis, d.amax, d.unsigned, d.narrow_range, d.calib_method, d.fake_quant) == \
        (8, None, None, False, False, "max", True)
    assert tensor_quant.QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL.axis == (0,)
    assert tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL.axis == (1,)
    assert tensor_quant.QUANT_DESC_UNSIGNED_8BIT_PER_TENSOR.unsigned
    assert copy.deepcopy(d) == d
    assert QuantDescriptor(**QuantDescriptor(num_bits=4, axis=(0,), unsigned=True).dict()).unsigned


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(num_bits=1), ValueError, "num_bits"), (dict(num_bits=17), ValueError, "num_bits"),
    (dict(num_bits=8.0), TypeError, "num_bits"), (dict(amax="x"), TypeError, "amax"),
    (dict(amax=-1.0), ValueError, "amax"), (dict(calib_method="kl"), ValueError, "calib_method"),
    (dict(foo=1), TypeError, "Unused keys"), (dict(axis="0"), TypeError, "axis"),
])
def test_descriptor_rejects_bad_fields(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        QuantDescriptor(**kwargs)


def test_quantizer_with_amax_matches_op_and_state_machine():
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=2.0))
    x = torch.randn(4, 5) * 3
    assert torch.equal(q(x), ops.fake_quant(x, torch.tensor(2.0)))
    q.disable()
    assert q(x) is x
    q.enable()
    q.disable_quant()
    assert q(x) is x
    assert "amax=2.0000" in repr(q.enable_quant() or q)


def test_amax_key_and_state_dict_round_trip():
    q = quant_nn.TensorQuantizer(tensor_quant.QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL)
    assert q.amax is None
    q.amax = torch.rand(8, 1, 1, 1) + 0.5
    sd = q.state_dict()
    assert list(sd) == ["_amax"] and sd["_amax"].shape == (8, 1, 1, 1)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = quant_nn.TensorQuantizer(tensor_quant.QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL)
    fresh.load_state_dict(torch.load(buf))  # registers _amax on the CPU: no forced .cuda()
    assert torch.equal(fresh.amax, q.amax) and fresh.amax.device.type == "cpu"
    w = torch.randn(8, 3, 3, 3)
    assert torch.equal(fresh(w), ops.fake_quant(w, q.amax))


def test_amax_setter_checks():
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=1.0))
    with pytest.raises(RuntimeError, match="Changing shape"):
        q.amax = torch.ones(3)
    with pytest.raises(ValueError, match=">= 0"):
        q.amax = -1.0
    with pytest.raises(ValueError, match="finite"):
        q.amax = float("nan")


def test_corrupted_amax_in_state_dict_is_rejected():
    q = quant_nn.TensorQuantizer(QuantDescriptor())
    with pytest.raises(RuntimeError, match="amax must be finite"):
        q.load_state_dict({"_amax": torch.tensor(float("nan"))})
    assert q.amax is None


def test_learned_amax_is_the_clip_range_with_pact_gradient():
    # pytorch-quantization: learn_amax trains clip.clip_value_min/max; max gets the summed
    # gradient of the inputs at or above it (here 2 * x of the clipped values, x >= 1).
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=1.0, learn_amax=True))
    assert [n for n, _ in q.named_parameters()] == ["clip.clip_value_min", "clip.clip_value_max"]
    x = torch.randn(100) * 2
    y = q(x)
    y.pow(2).sum().backward()
    assert q.clip.clip_value_max.grad.item() == pytest.approx((2 * y)[x >= 1].sum().item(), rel=1e-6)
    assert q.clip.clip_value_min.grad.item() == pytest.approx((2 * y)[x <= -1].sum().item(), rel=1e-6)


def test_real_quant_mode_returns_integers_and_scale():
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=127.0, fake_quant=False))
    y = q(torch.tensor([1.4, -2.6]))
    assert y.tolist() == [1.0, -3.0] and float(q.scale) == pytest.approx(1.0)


def test_step_size_and_maxbound():
    q = quant_nn.TensorQuantizer(QuantDescriptor(amax=0.577))
    assert q.maxbound == 127
    assert float(q.step_size) == pytest.approx(0.577 / 127)
    assert quant_nn.TensorQuantizer(QuantDescriptor(unsigned=True)).maxbound == 255


def test_public_switch_properties_follow_the_state_machine():
    # calibrate, placement, the ONNX checks and the tools read these instead of private fields.
    q = quant_nn.TensorQuantizer(QuantDescriptor())
    assert (q.disabled, q.if_quant, q.if_calib, q.calibrator) == (False, True, False, None)
    q.disable()
    assert q.disabled
    q.enable()
    q.disable_quant()
    q.enable_calib()  # makes the descriptor's calibrator on first use
    assert (q.disabled, q.if_quant, q.if_calib) == (False, False, True)
    assert type(q.calibrator).__name__ == "MaxCalibrator"
    q.disable_calib()
    q.enable_quant()
    assert (q.if_quant, q.if_calib) == (True, False)
    with pytest.raises(AttributeError):
        q.disabled = True  # read-only: disable() / enable() change it
