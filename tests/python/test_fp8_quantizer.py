"""QuantDescriptor(num_bits=(4, 3)) (pytorch-quantization 2.2's FP8 E4M3) through TensorQuantizer,
the quant modules and calibration; the numbers are checked against torch's float8_e4m3fn cast."""
import copy

import pytest
import torch
from torch import nn

import torchqat
from torchqat import calib
from torchqat import nn as qnn
from torchqat import ops
from torchqat.tensor_quant import QuantDescriptor, scaled_e4m3

FP8 = (4, 3)


def _e4m3_ref(x, amax):
    step = amax / 448.0
    return (x.float() / step).clamp(-448, 448).to(torch.float8_e4m3fn).float() * step


def test_descriptor_fields_round_trip():
    d = QuantDescriptor(num_bits=FP8, axis=(0,), name="w")
    assert d.num_bits == (4, 3)
    assert d.dict() == {"num_bits": (4, 3), "name": "w", "axis": (0,)}
    assert QuantDescriptor(**d.dict()) == d
    assert copy.deepcopy(d) == d
    assert QuantDescriptor(num_bits=[4, 3]).num_bits == (4, 3)  # as read back from YAML
    assert "(4, 3)bit" in str(d)


@pytest.mark.parametrize("bits", [(5, 2), (4, 3, 0), (8,), (3, 4)])
def test_other_float_formats_are_refused_with_type_error(bits):
    with pytest.raises(TypeError, match=r"num_bits must be an integer in \[2, 16\] or the tuple \(4, 3\)"):
        QuantDescriptor(num_bits=bits)
    q = qnn.TensorQuantizer()
    with pytest.raises(TypeError, match="or the tuple"):
        q.num_bits = bits
    assert q.num_bits == 8  # nothing half-changed


def test_unsigned_fp8_is_refused():
    with pytest.raises(ValueError, match="is a signed format"):
        QuantDescriptor(num_bits=FP8, unsigned=True)


def test_quantizer_max_calibration_and_forward_equal_the_cast():
    torch.manual_seed(0)
    q = qnn.TensorQuantizer(QuantDescriptor(num_bits=FP8))
    assert q.maxbound == 448.0
    x = torch.randn(4, 8, 5, 5) * 3
    q.enable_calib()
    q.disable_quant()
    q(x)
    q(x * 0.5)
    q.load_calib_amax()
    q.disable_calib()
    q.enable_quant()
    assert torch.equal(q.amax, x.abs().max())
    assert torch.equal(q.step_size, q.amax / 448.0)
    y = q(x * 1.3)  # part of it past amax: saturates
    assert torch.equal(y, _e4m3_ref(x * 1.3, q.amax))
    assert torch.equal(y, scaled_e4m3(x * 1.3, q.amax))
    assert list(q.state_dict()) == ["_amax"]
    assert "(4, 3)bit" in q.extra_repr()


def test_dynamic_and_per_channel_weight_quantizer():
    torch.manual_seed(1)
    w = torch.randn(6, 3, 3, 3)
    q = qnn.TensorQuantizer(QuantDescriptor(num_bits=FP8, axis=(0,)))
    amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    assert torch.equal(q(w), _e4m3_ref(w, amax))  # dynamic: the tensor's own per-channel amax
    q.amax = amax
    assert torch.equal(q(w), _e4m3_ref(w, amax))


def test_gradient_is_the_ste_mask():
    q = qnn.TensorQuantizer(QuantDescriptor(num_bits=FP8, amax=1.0))
    x = torch.tensor([-2.0, -1.0, 0.3, 1.0, 1.5], requires_grad=True)
    q(x).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


def test_quant_conv_with_fp8_descriptors_keeps_the_state_dict_keys():
    torch.manual_seed(2)
    int8 = qnn.QuantConv2d(3, 4, 3)
    fp8 = qnn.QuantConv2d(3, 4, 3, quant_desc_input=QuantDescriptor(num_bits=FP8),
                          quant_desc_weight=QuantDescriptor(num_bits=FP8, axis=(0,)))
    x = torch.randn(2, 3, 8, 8)
    for m in (int8, fp8):
        m._input_quantizer.amax = x.abs().max()
        m._weight_quantizer.amax = m.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    assert list(fp8.state_dict()) == list(int8.state_dict())
    fp8.load_state_dict(int8.state_dict())
    y = fp8(x)
    w = _e4m3_ref(fp8.weight.detach(), fp8._weight_quantizer.amax)
    ref = nn.functional.conv2d(_e4m3_ref(x, fp8._input_quantizer.amax), w, fp8.bias)
    assert torch.equal(y.detach(), ref.detach())


def _hist(x, num_bins=256):
    cal = calib.HistogramCalibrator(num_bits=FP8, num_bins=num_bins)
    cal.collect(x)
    return cal


def _mse_ref(counts, centers, start):
    """The centre with the first least sum count * (fake_quant_e4m3(centres; amax = centre) - centres)^2."""
    errs = []
    for i in range(start, counts.numel()):
        q = ops.fake_quant_e4m3(centers, centers[i])
        errs.append(float((((q.double() - centers.double()) ** 2) * counts).sum()))
    return centers[start + min(range(len(errs)), key=lambda i: errs[i])].item()


def test_histogram_mse_searches_with_fp8_quantization():
    """The first argmin of sum count * (e4m3_fake_quant(centre) - centre)^2 over candidate centres,
    written out with the op on the centres and compared with the calibrator's answer."""
    torch.manual_seed(3)
    x = torch.randn(20000) * torch.rand(20000) ** 4 * 4
    cal = _hist(x)
    got = cal.compute_amax("mse", start_bin=16)
    counts = cal._impl.histogram().double()
    width = cal._impl.bin_width()
    centers = ((torch.arange(counts.numel(), dtype=torch.float64) + 0.5) * width).float()
    assert got.item() == _mse_ref(counts, centers, 16)
    # And the integer search on the same histogram picks another amax (the format is used).
    int_cal = calib.HistogramCalibrator(num_bits=8, num_bins=256)
    int_cal.collect(x)
    assert int_cal.compute_amax("mse", start_bin=16).item() != got.item()


def test_histogram_percentile_works_and_entropy_is_refused():
    cal = _hist(torch.randn(5000))
    assert cal.compute_amax("percentile", percentile=99.0) > 0
    with pytest.raises(ValueError, match="not defined for FP8 E4M3"):
        cal.compute_amax("entropy")


def test_quantizer_with_histogram_calibration():
    torch.manual_seed(4)
    q = qnn.TensorQuantizer(QuantDescriptor(num_bits=FP8, calib_method="histogram"))
    q.enable_calib()
    q.disable_quant()
    x = torch.randn(10000)
    q(x)
    q.load_calib_amax("mse")
    ref = _hist(x, 2048).compute_amax("mse")
    assert torch.equal(q.amax, ref)


def test_cuda_ext_fake_e4m3fy_is_the_bare_cast():
    from torchqat import cuda_ext
    x = torch.randn(1000) * 100
    got = cuda_ext.fake_e4m3fy(x)
    assert torch.equal(got, x.clamp(-448, 448).to(torch.float8_e4m3fn).float())
    assert torch.equal(cuda_ext.fake_e4m3fy(torch.tensor([1e5, float("inf")])), torch.tensor([448.0, 448.0]))


def test_numpy_histogram_path_searches_with_fp8_too():
    torch.manual_seed(5)
    x = torch.randn(5000) * 2
    cal = calib.HistogramCalibrator(num_bits=FP8, num_bins=256, torch_hist=False)
    cal.collect(x)
    counts, edges = cal._np_state[0].double(), cal._np_state[1].float()
    assert cal.compute_amax("mse", start_bin=16).item() == _mse_ref(counts, (edges[1:] + edges[:-1]) / 2, 16)
    with pytest.raises(ValueError, match="not defined for FP8 E4M3"):
        cal.compute_amax("entropy")
