"""TensorQuantizer and the calibrators against pytorch-quantization 2.2.1's documented behaviour
(pre_quant_scale, learn_amax through Clip, enable_clip / if_clip, scale_amax, extra_repr,
maxbound / step_size, integer calibration data, error types). Numbers are checked against
torch's own fake_quantize_per_tensor_affine and autograd of plain torch code."""
import logging

import numpy as np
import pytest
import torch

from torchqat import calib
from torchqat import nn as quant_nn
from torchqat.tensor_quant import QuantDescriptor

TQ = quant_nn.TensorQuantizer


def _torch_fq(x, amax, narrow=False):
    """torch's per-tensor fake quant with pytorch-quantization's scale (amax / 127), signed 8 bit."""
    return torch.fake_quantize_per_tensor_affine(x, float(amax) / 127, 0, -127 if narrow else -128, 127)


# ----- pre_quant_scale ----------------------------------------------------------------------------

def test_pre_quant_scale_is_a_buffer_registered_by_its_setter():
    q = TQ(QuantDescriptor(amax=2.0))
    assert q.pre_quant_scale is None and "_pre_quant_scale" not in q.state_dict()
    q.pre_quant_scale = torch.tensor([0.5, 2.0, 1.0])
    assert sorted(q.state_dict()) == ["_amax", "_pre_quant_scale"]
    assert q.pre_quant_scale.tolist() == [0.5, 2.0, 1.0]
    q.pre_quant_scale = [1.0, 1.0, 4.0]  # same shape: copied in place
    assert q._pre_quant_scale.tolist() == [1.0, 1.0, 4.0]
    with pytest.raises(RuntimeError, match="Changing shape when setting pre_quant_scale is not allowed"):
        q.pre_quant_scale = torch.ones(4)
    assert q._pre_quant_scale.tolist() == [1.0, 1.0, 4.0]  # unchanged by the refused call


def test_pre_quant_scale_multiplies_before_quantizing_and_before_the_disabled_check():
    x = torch.randn(5, 3)
    s = torch.tensor([0.5, 2.0, 1.5])
    q = TQ(QuantDescriptor(amax=2.0))
    q.pre_quant_scale = s
    torch.testing.assert_close(q(x), _torch_fq(x * s, 2.0), rtol=0, atol=0)
    q.disable()
    torch.testing.assert_close(q(x), x * s, rtol=0, atol=0)


def test_pre_quant_scale_loads_from_a_state_dict_into_a_quantizer_without_one():
    src = TQ(QuantDescriptor(amax=1.0))
    src.pre_quant_scale = torch.tensor([3.0, 0.25])
    dst = TQ(QuantDescriptor())
    dst.load_state_dict(src.state_dict())
    assert dst.pre_quant_scale.tolist() == [3.0, 0.25] and float(dst.amax) == 1.0
    assert "pre_quant_scale" in dst.extra_repr()


# ----- learn_amax through Clip ----------------------------------------------------------------------

def test_learn_amax_state_dict_keys_and_initial_range():
    q = TQ(QuantDescriptor(learn_amax=True))
    assert isinstance(q.clip, quant_nn.Clip)
    assert list(q.state_dict()) == ["clip.clip_value_min", "clip.clip_value_max"]
    assert [n for n, _ in q.named_parameters()] == ["clip.clip_value_min", "clip.clip_value_max"]
    assert (q.clip.clip_value_min.item(), q.clip.clip_value_max.item()) == (-1.0, 1.0)
    assert q.amax is None and q._if_clip
    q2 = TQ(QuantDescriptor(amax=3.0, learn_amax=True))
    assert sorted(q2.state_dict()) == ["_amax", "clip.clip_value_max", "clip.clip_value_min"]
    assert (q2.clip.clip_value_min.item(), q2.clip.clip_value_max.item()) == (-3.0, 3.0)


def test_learn_amax_forward_and_pact_gradient_match_a_torch_reference():
    x = torch.tensor([-4.0, -2.5, -1.0, 0.3, 1.7, 2.0, 2.2, 5.0])
    g = torch.arange(1.0, 9.0)
    q = TQ(QuantDescriptor(learn_amax=True))
    with torch.no_grad():
        q.clip.clip_value_min.fill_(-2.5)
        q.clip.clip_value_max.fill_(2.0)
    xq = x.clone().requires_grad_(True)
    y = q(xq)
    y.backward(g)
    # reference: clip by torch.where (PACT routing via autograd), then torch's fake quant with
    # amax = max(-min, max) = 2.5 taken as a constant
    lo = torch.tensor(-2.5, requires_grad=True)
    hi = torch.tensor(2.0, requires_grad=True)
    xr = x.clone().requires_grad_(True)
    clipped = torch.where(xr <= lo, lo, torch.where(xr >= hi, hi, xr))
    yr = _torch_fq(clipped, 2.5)
    yr.backward(g)
    torch.testing.assert_close(y, yr, rtol=0, atol=0)
    torch.testing.assert_close(xq.grad, xr.grad, rtol=0, atol=0)
    assert q.clip.clip_value_min.grad.item() == lo.grad.item() == 1.0 + 2.0
    assert q.clip.clip_value_max.grad.item() == hi.grad.item() == 6.0 + 7.0 + 8.0


def test_init_learn_amax_copies_amax_into_the_clip_bounds(caplog):
    q = TQ(QuantDescriptor(learn_amax=True))
    q.amax = 1.75
    q.init_learn_amax()
    assert (q.clip.clip_value_min.item(), q.clip.clip_value_max.item()) == (-1.75, 1.75)
    pc = TQ(QuantDescriptor(learn_amax=True))
    pc.amax = np.array([[0.5], [3.0]], dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="torchqat"):
        pc.init_learn_amax()
    assert "Per channel learned amax not supported" in caplog.text
    assert pc.clip.clip_value_max.item() == 3.0
    with pytest.raises(RuntimeError, match="learn_amax=False"):
        TQ(QuantDescriptor(amax=1.0)).init_learn_amax()


def test_enable_disable_clip_and_if_clip():
    with pytest.raises(ValueError, match="learn_amax is False. Cannot enable clip"):
        TQ(QuantDescriptor()).enable_clip()
    with pytest.raises(ValueError, match="learn_amax is False"):
        TQ(QuantDescriptor(), if_clip=True)
    q = TQ(QuantDescriptor(learn_amax=True), if_clip=True)
    assert q._if_clip and "clip" in q.extra_repr().split()
    q.disable_clip()
    assert not q._if_clip and not q.clip.clip_value_min.requires_grad and not q.clip.clip_value_max.requires_grad
    assert "clip" not in q.extra_repr().split()
    q.enable_clip()
    assert q.clip.clip_value_min.requires_grad and q.clip.clip_value_max.requires_grad
    # clip stage without the quant stage: the output is the clipped input
    q.disable_quant()
    x = torch.tensor([-3.0, 0.123, 3.0])
    assert q(x).tolist() == [-1.0, pytest.approx(0.123), 1.0]


def test_learned_range_trains_with_sgd():
    torch.manual_seed(0)
    q = TQ(QuantDescriptor(learn_amax=True))
    opt = torch.optim.SGD(q.parameters(), lr=0.01)
    x = torch.randn(1000) * 3
    before = q.clip.clip_value_max.item()
    for _ in range(3):
        opt.zero_grad()
        (q(x) - x).pow(2).mean().backward()  # the range must grow towards the data
        opt.step()
    assert q.clip.clip_value_max.item() > before and q.clip.clip_value_min.item() < -before


# ----- the other properties ----------------------------------------------------------------------

def test_scale_amax_multiplies_amax_at_use():
    x = torch.randn(100) * 2
    q = TQ(QuantDescriptor(amax=2.0, scale_amax=0.5))
    torch.testing.assert_close(q(x), _torch_fq(x, 1.0), rtol=0, atol=0)
    assert float(q.amax) == 2.0 and " *0.5" in q.extra_repr()


def test_maxbound_step_size_and_fb_switch():
    assert TQ(QuantDescriptor()).maxbound == 127
    assert TQ(QuantDescriptor(num_bits=4, unsigned=True)).maxbound == 15
    assert float(TQ(QuantDescriptor(amax=0.577)).step_size) == pytest.approx(0.577 / 127)
    assert TQ(QuantDescriptor()).step_size is None
    assert TQ.use_fb_fake_quant is False


def test_extra_repr_tokens_in_pytorch_quantization_order():
    q = TQ(QuantDescriptor(amax=2.5))
    assert q.extra_repr() == "8bit fake per-tensor amax=2.5000 calibrator=MaxCalibrator scale=1.0 quant"
    h = TQ(QuantDescriptor(num_bits=4, unsigned=True, narrow_range=True, calib_method="histogram", axis=(0,)),
           if_calib=True)
    assert h.extra_repr() == "unsigned 4bit narrow fake axis=0 amax=dynamic calibrator=HistogramCalibrator scale=1.0 quant calib"
    lq = TQ(QuantDescriptor(learn_amax=True))
    assert lq.extra_repr() == "8bit fake per-tensor amax=dynamic learned calibrator=MaxCalibrator scale=1.0 quant clip"
    d = TQ(QuantDescriptor(), disabled=True)
    assert d.extra_repr() == "disabled"


def test_error_types_of_bad_arguments():
    with pytest.raises(TypeError):
        TQ(QuantDescriptor(), no_such_kwarg=1)
    with pytest.raises(TypeError, match="Unused keys"):
        QuantDescriptor(no_such_key=1)
    q = TQ(QuantDescriptor(amax=1.0))
    with pytest.raises(RuntimeError, match="Changing shape when setting amax is not allowed"):
        q.amax = [1.0, 2.0]
    with pytest.raises(ValueError):
        q.amax = -1.0


# ----- calibrators --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.int8, torch.int32, torch.int64, torch.uint8])
def test_max_calibrator_accepts_integer_tensors(dtype):
    x = torch.tensor([[3, -7, 1], [0, 5, -2]], dtype=dtype) if dtype != torch.uint8 else \
        torch.tensor([[3, 7, 1], [0, 5, 2]], dtype=dtype)
    c = calib.MaxCalibrator(8, None, False)
    c.collect(x)
    assert c.compute_amax().dtype == torch.float32 and c.compute_amax().item() == 7.0
    pc = calib.MaxCalibrator(8, 0, False)
    pc.collect(x)
    assert pc.compute_amax().flatten().tolist() == [7.0, 5.0]


def test_histogram_calibrator_integer_data_equals_its_float_cast():
    x = torch.randint(-100, 100, (4000,), dtype=torch.int32)
    a, b = calib.HistogramCalibrator(8, None, False), calib.HistogramCalibrator(8, None, False)
    a.collect(x)
    b.collect(x.float())
    assert torch.equal(a._calib_hist, b._calib_hist)
    assert a.compute_amax("percentile", percentile=99.0) == b.compute_amax("percentile", percentile=99.0)


def test_histogram_calibrator_takes_torch_hist():
    assert calib.HistogramCalibrator(8, None, False)._torch_hist is True
    assert calib.HistogramCalibrator(8, None, False, torch_hist=False)._torch_hist is False


def test_max_calibrator_track_amax_and_shape_change():
    c = calib.MaxCalibrator(8, 0, False, track_amax=True)
    c.collect(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    c.collect(torch.tensor([[-3.0, 0.0], [0.125, 0.25]]))
    assert [a.flatten().tolist() for a in c.amaxs] == [[2.0, 0.5], [3.0, 0.25]]
    assert c.compute_amax().flatten().tolist() == [3.0, 0.5]
    with pytest.raises(RuntimeError, match="amax shape changed!"):
        c.collect(torch.ones(3, 2))
    assert calib.MaxCalibrator(8, None, False).amaxs is None


# ----- export ----------------------------------------------------------------------------------

def test_learned_range_quantizer_exports_and_runs_in_onnxruntime(tmp_path):
    import onnxruntime as ort
    import torchqat
    torch.manual_seed(0)
    model = torch.nn.Sequential(quant_nn.QuantLinear(6, 4, quant_desc_input=QuantDescriptor(learn_amax=True)))
    x = torch.randn(8, 6) * 2
    torchqat.calibrate(model, [x], progress=False)
    q = model[0]._input_quantizer
    assert q.clip.clip_value_max.item() == pytest.approx(float(q.amax))  # calibrate starts the range
    with torch.no_grad():
        q.clip.clip_value_min.fill_(-1.5)  # learned bounds differ from the calibrated amax
        q.clip.clip_value_max.fill_(1.25)
    model.eval()
    path = tmp_path / "learned.onnx"
    torchqat.onnx.export(model, (x,), str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    # ONNX Runtime and torch do the same int8 arithmetic up to fp32 rounding of the matmul
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
