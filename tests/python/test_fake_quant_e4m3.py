"""FP8 E4M3 fake quantization (torchqat.fake_quant_e4m3) against torch's own float8_e4m3fn cast.

The reference is `(x / step).clamp(-448, 448).to(torch.float8_e4m3fn).float() * step` with
step = amax / 448 in float32 (ONNX Q/DQ's arithmetic with the exported scale): torch's cast rounds
to nearest even but turns |v| >= 464 and Inf into NaN, where the op saturates (as
pytorch-quantization's CUDA cast and ONNX QuantizeLinear do), so the reference clamps first;
inside [-464, 464] the clamp changes nothing.
"""
import pytest
import torch

from conftest import cuda
from gpu_views import on_gpu
from torchqat import ops

E4M3 = torch.float8_e4m3fn


def _ref(x, amax):
    """The reference in float32 (float64 for float64 input), returned in x's dtype."""
    xf = x if x.dtype == torch.float64 else x.float()
    step = amax.float() / 448.0
    y = (xf / step).clamp(-448, 448).to(E4M3).to(xf.dtype) * step
    y = torch.where(step < 2.0 ** -126, xf * 0, y)  # amax 0 or a subnormal step: the channel is 0
    return y.to(x.dtype)


_INT_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same(a, b):
    """Equal bit for bit, NaN where the other is NaN (NaN payloads aside)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = a.isnan()
    assert torch.equal(nan, b.isnan())
    view = _INT_VIEW[a.element_size()]
    assert torch.equal(a[~nan].view(view), b[~nan].view(view))


def _bit_pattern_classes():
    """float32 values of every class: every E4M3 value and the midpoints between neighbours (ties)
    with their one-ulp neighbours, E4M3 subnormals, float32 subnormals, the saturation edge, Inf,
    NaN, -0, and a stride through all 2^32 bit patterns."""
    grid = torch.arange(256, dtype=torch.uint8).view(E4M3).float()
    grid = grid[~grid.isnan()].sort().values.unique()
    mid = (grid[1:] + grid[:-1]) / 2
    ties = torch.cat([mid, mid.nextafter(torch.tensor(float("inf"))), mid.nextafter(torch.tensor(-float("inf")))])
    sub32 = torch.tensor([1, 2, 3, 0x7FFFFF, 0x400000], dtype=torch.int32).view(torch.float32)
    edge = torch.tensor([447.0, 448.0, 448.5, 455.9, 456.0, 463.99, 464.0, 464.01, 479.9, 480.0, 500.0, 1e4, 3e38,
                         float("inf"), float("nan"), -0.0, 0.0, 2.0 ** -6, 2.0 ** -7, 2.0 ** -9, 2.0 ** -10,
                         3 * 2.0 ** -11, 2.0 ** -10 * 1.0001])
    stride = torch.arange(0, 2 ** 32, 4099, dtype=torch.int64).to(torch.int32).view(torch.float32)
    x = torch.cat([grid, ties, sub32, edge, stride])
    return torch.cat([x, -x])


def test_bit_patterns_equal_torch_cast_at_scale_one():
    """amax = 448: the step is exactly 1, so the op is the bare cast on every class of float32."""
    x = _bit_pattern_classes()
    y = ops.fake_quant_e4m3(x, torch.tensor(448.0))
    _same(y, _ref(x, torch.tensor(448.0)))
    # Where torch's own cast is finite the op equals it with no clamp at all.
    plain = x.to(E4M3).float()
    finite = ~plain.isnan()
    _same(y[finite], plain[finite])
    # Saturation instead of NaN; NaN stays NaN; -0 keeps its sign.
    assert torch.equal(ops.fake_quant_e4m3(torch.tensor([479.0, -1e4, float("inf"), -float("inf")]),
                                           torch.tensor(448.0)), torch.tensor([448.0, -448.0, 448.0, -448.0]))
    assert ops.fake_quant_e4m3(torch.tensor([float("nan")]), torch.tensor(448.0)).isnan().all()
    z = ops.fake_quant_e4m3(torch.tensor([-0.0, -2.0 ** -12]), torch.tensor(448.0))
    assert torch.equal(torch.signbit(z), torch.tensor([True, True])) and (z == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_scaled_per_tensor_equals_reference(dtype):
    x = (torch.randn(3000) * 4).to(dtype)
    for amax in (0.37, 1.0, 2.5, 7.0, 1e-3):
        a = torch.tensor(amax)
        _same(ops.fake_quant_e4m3(x, a), _ref(x, a))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_per_channel_equals_reference_in_every_layout(dtype):
    x = (torch.randn(6, 5, 4, 3) * 3).to(dtype)
    for axis in range(4):
        amax = torch.rand(x.shape[axis]) * 3 + 0.05
        amax[0] = 0.0  # a channel that quantizes to zero
        shape = [1] * 4
        shape[axis] = -1
        ref = _ref(x, amax.view(shape))
        _same(ops.fake_quant_e4m3(x, amax, axis), ref)
        _same(ops.fake_quant_e4m3(x, amax.view(shape)), ref)  # axis inferred from the broadcast shape
        cl = ops.fake_quant_e4m3(x.contiguous(memory_format=torch.channels_last), amax, axis)
        _same(cl.contiguous(), ref)
        assert cl.is_contiguous(memory_format=torch.channels_last)
    _same(ops.fake_quant_e4m3(x.transpose(0, 2), torch.tensor(1.5)), _ref(x.transpose(0, 2), torch.tensor(1.5)))


def test_zero_and_tiny_amax_give_zero_not_nan():
    x = torch.tensor([-3.0, -0.0, 0.5, 100.0])
    for a in (0.0, 1e-38):
        assert torch.equal(ops.fake_quant_e4m3(x, torch.tensor(a)).abs(), torch.zeros(4))


def test_bad_amax_and_input_raise_naming_the_argument():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="fake_quant_e4m3: amax must be >= 0, got -1"):
        ops.fake_quant_e4m3(x, torch.tensor(-1.0))
    with pytest.raises(ValueError, match="fake_quant_e4m3: amax must be finite, got NaN"):
        ops.fake_quant_e4m3(x, torch.tensor(float("nan")))
    with pytest.raises(ValueError, match=r"amax of shape \[5\] does not match x of shape \[4, 3\]"):
        ops.fake_quant_e4m3(x, torch.ones(5), 1)
    with pytest.raises(TypeError, match="x must be float32, float16, bfloat16 or float64, got Int"):
        ops.fake_quant_e4m3(x.int(), torch.tensor(1.0))


def _plain_lsq_reference(x, amax):
    """y written out with torch ops: the clamp's own gradient is the STE mask, round is straight
    through; LSQ scales amax's gradient by 1 / sqrt(N * 448), N = one sample's elements per amax entry."""
    step = amax / 448.0
    vc = (x / step).clamp(-448, 448)
    q = vc + (vc.to(E4M3).float() - vc).detach()
    return q * step


@pytest.mark.parametrize("axis", [None, 0])
def test_backward_ste_mask_and_lsq_amax_gradient(axis):
    x = (torch.randn(4, 3, 5) * 2).requires_grad_()
    amax = (torch.rand(4) + 0.5 if axis == 0 else torch.tensor(1.3)).requires_grad_()
    g = torch.randn(4, 3, 5)
    ops.fake_quant_e4m3(x, amax, axis).backward(g)

    xr = x.detach().clone().requires_grad_()
    ar = amax.detach().clone().requires_grad_()
    shaped = ar.view(4, 1, 1) if axis == 0 else ar
    _plain_lsq_reference(xr, shaped).backward(g)
    assert torch.equal(x.grad, g * (x.detach().abs() <= (amax.detach().view(4, 1, 1) if axis == 0
                                                         else amax.detach())))
    torch.testing.assert_close(x.grad, xr.grad)  # the reference's grad is step * (1 / step) * g: rounded
    n = x.numel() / 4  # N_F: per channel along dim 0, 60 / 4; per tensor, one sample of the batch of 4
    torch.testing.assert_close(amax.grad, ar.grad / (n * 448.0) ** 0.5, rtol=1e-4, atol=1e-7)


def test_frozen_amax_gets_no_gradient():
    x = torch.randn(8, requires_grad=True)
    amax = torch.tensor(1.0)
    ops.fake_quant_e4m3(x, amax).sum().backward()
    assert amax.grad is None and x.grad is not None


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("offset", [0, 1])
def test_cuda_equals_cpu(dtype, offset):
    cases = [(_bit_pattern_classes().to(dtype), torch.tensor(448.0), None),
             ((torch.randn(64, 32, 9, 7) * 3).to(dtype), torch.rand(32) * 3, 1),
             ((torch.randn(64, 32, 9, 7) * 3).to(dtype).contiguous(memory_format=torch.channels_last),
              torch.rand(32) * 3, 1),
             ((torch.randn(1000003) * 3).to(dtype), torch.tensor(2.0), None)]
    for x, amax, axis in cases:
        xg = on_gpu(x, offset)
        _same(ops.fake_quant_e4m3(xg, amax.cuda(), axis).cpu(), ops.fake_quant_e4m3(x, amax, axis))
        g = torch.randn(x.shape).to(dtype)
        for amax_grad in (False, True):
            gc, ac = torch.ops.torchqat.fake_quant_e4m3_backward(g, x, amax, axis, amax_grad)
            gg, ag = torch.ops.torchqat.fake_quant_e4m3_backward(on_gpu(g, offset), xg, amax.cuda(), axis, amax_grad)
            assert torch.equal(gg.cpu(), gc)
            if amax_grad:
                torch.testing.assert_close(ag.cpu(), ac, rtol=1e-4, atol=1e-6)
