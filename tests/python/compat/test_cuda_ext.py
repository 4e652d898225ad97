"""torchqat.cuda_ext: pytorch-quantization's extension functions (narrow_range=True by default), on any device."""
import pytest
import torch

import torchqat
from torchqat import cuda_ext

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and torchqat.cuda_compiled() else [])


def _close_to(got, ref, step):
    """Equal to torch's fake quant but for rounding ties (x/s vs x*(1/s)), which move one step."""
    err = (got - ref).abs()
    assert err.max() <= step * 1.0001 and (err < 1e-6).float().mean() > 0.95


@pytest.mark.parametrize("device", DEVICES)
def test_fake_tensor_quant_is_narrow_by_default(device):
    x = torch.randn(1000, device=device) * 2
    amax = torch.tensor(1.5, device=device)
    got = cuda_ext.fake_tensor_quant(x, amax)
    _close_to(got, torch.fake_quantize_per_tensor_affine(x, 1.5 / 127, 0, -127, 127), 1.5 / 127)
    assert got.min().item() == pytest.approx(-1.5) and got.max().item() == pytest.approx(1.5)
    wide = cuda_ext.fake_tensor_quant(x, amax, 8, False, False)
    assert wide.min().item() == pytest.approx(-128 * 1.5 / 127)
    uns = cuda_ext.fake_tensor_quant(x.abs(), amax, 8, True)
    _close_to(uns, torch.fake_quantize_per_tensor_affine(x.abs(), 1.5 / 255, 0, 0, 255), 1.5 / 255)


@pytest.mark.parametrize("device", DEVICES)
def test_fake_tensor_quant_in_place(device):
    x = torch.randn(64, device=device)
    want = cuda_ext.fake_tensor_quant(x, torch.tensor(1.0, device=device))
    assert cuda_ext.fake_tensor_quant_(x, torch.tensor(1.0, device=device)) is None
    assert torch.equal(x, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("axis", [0, 1])
def test_fake_tensor_quant_with_axis(device, axis):
    x = torch.randn(4, 6, 3, device=device)
    amax = x.abs().amax(dim=[d for d in range(3) if d != axis]) * 0.7
    got = cuda_ext.fake_tensor_quant_with_axis(x, amax, axis)
    ref = torch.fake_quantize_per_channel_affine(x, amax / 127, torch.zeros_like(amax, dtype=torch.int32), axis,
                                                 -127, 127)
    _close_to(got, ref, amax.max().item() / 127)


def test_bad_amax_is_an_error_not_a_device_assert():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError):
        cuda_ext.fake_tensor_quant(x, torch.tensor(-1.0))
    with pytest.raises(ValueError):
        cuda_ext.fake_tensor_quant_with_axis(x, torch.ones(5), 0)
    with pytest.raises(TypeError, match="amax must be a tensor"):
        cuda_ext.fake_tensor_quant(x, 1.0)
