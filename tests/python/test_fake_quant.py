"""fake_quant against torch's own fake-quant kernels, the STE mask and the LSQ amax gradient."""
import pytest
import torch

from torchqat import ops

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def bound_of(num_bits, unsigned):
    return (1 << (num_bits - 1 + int(unsigned))) - 1


def torch_reference(x, amax, num_bits=8, unsigned=False, narrow=False, axis=None):
    b = bound_of(num_bits, unsigned)
    qmin = 0 if unsigned else (-b if narrow else -b - 1)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, float(amax) / b, 0, qmin, b)
    scale = (amax.reshape(-1) / b).float()
    zp = torch.zeros(scale.numel(), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(x, scale, zp, axis, qmin, b)


@pytest.mark.parametrize("num_bits,unsigned,narrow", [(8, False, False), (8, False, True), (8, True, False),
                                                      (4, False, False), (7, True, False)])
def test_per_tensor_bit_exact_against_torch(num_bits, unsigned, narrow):
    x = torch.randn(4, 33, 17) * 3
    amax = torch.tensor(2.5)
    y = ops.fake_quant(x, amax, num_bits, unsigned, narrow)
    ref = torch_reference(x, 2.5, num_bits, unsigned, narrow)
    assert torch.equal(y, ref)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_per_channel_bit_exact_against_torch(axis):
    x = torch.randn(6, 5, 7, 9) * 2
    k = x.shape[axis]
    amax = torch.rand(k) * 3 + 0.1
    y = ops.fake_quant(x, amax, 8, False, False, axis)
    ref = torch_reference(x, amax, axis=axis % 4)
    assert torch.equal(y, ref)


def test_broadcast_shaped_amax_infers_axis():
    w = torch.randn(16, 8, 3, 3)
    amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    assert amax.shape == (16, 1, 1, 1)
    assert torch.equal(ops.fake_quant(w, amax), torch_reference(w, amax, axis=0))


def test_num_bits_16_and_2():
    x = torch.randn(1000)
    for nb in (2, 16):
        assert torch.equal(ops.fake_quant(x, torch.tensor(1.7), nb), torch_reference(x, 1.7, nb))


def test_rounding_is_half_even():
    amax = torch.tensor(127.0)  # step 1
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    assert ops.fake_quant(x, amax).tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, -2.0]


def test_ranges_signed_unsigned_narrow():
    x = torch.tensor([-1000.0, 1000.0])
    amax = torch.tensor(127.0)
    assert ops.fake_quant(x, amax).tolist() == [-128.0, 127.0]
    assert ops.fake_quant(x, amax, narrow_range=True).tolist() == [-127.0, 127.0]
    assert ops.fake_quant(x, torch.tensor(255.0), unsigned=True).tolist() == [0.0, 255.0]


def test_zero_amax_channel_gives_zero_not_nan():
    x = torch.randn(3, 10)
    amax = torch.tensor([1.0, 0.0, 2.0])
    y = ops.fake_quant(x, amax, axis=0)
    assert torch.isfinite(y).all()
    assert torch.count_nonzero(y[1]) == 0
    assert torch.count_nonzero(ops.fake_quant(x, torch.tensor(0.0))) == 0
    tiny = torch.tensor(1e-40)  # denormal: its step underflows
    assert torch.isfinite(ops.fake_quant(x, tiny)).all()


def test_nan_input_stays_nan():
    x = torch.tensor([float("nan"), 1.0])
    y = ops.fake_quant(x, torch.tensor(1.0))
    assert torch.isnan(y[0]) and y[1] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_compute_in_fp32_and_keep_dtype(dtype):
    x = (torch.randn(8, 16, 5, 5) * 2).to(dtype)
    amax = torch.rand(16) + 0.5
    y = ops.fake_quant(x, amax, axis=1)
    assert y.dtype == dtype
    ref = torch_reference(x.float(), amax, axis=1)
    if dtype == torch.float64:
        ref = torch_reference(x, amax, axis=1)
    assert torch.equal(y, ref.to(dtype))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "sliced"])
@pytest.mark.parametrize("axis", [None, 1])
def test_layouts(layout, axis):
    base = torch.randn(4, 6, 10, 12)
    x = {"contiguous": base,
         "channels_last": base.contiguous(memory_format=torch.channels_last),
         "transposed": base.transpose(2, 3),
         "sliced": base[:, :, ::2, 1:]}[layout]
    amax = torch.rand(6) + 0.2 if axis is not None else torch.tensor(1.3)
    y = ops.fake_quant(x, amax, axis=axis)
    ref = torch_reference(x.contiguous(), amax if axis is not None else 1.3, axis=axis)
    assert torch.equal(y, ref)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


def reference_fake_quant(x, amax, num_bits=8, unsigned=False, narrow=False):
    """Straightforward autograd reference: LSQ-style rounding STE, forward equal to fake_quant."""
    b = bound_of(num_bits, unsigned)
    qmin = 0 if unsigned else (-b if narrow else -b - 1)
    step = amax / b
    v = x / step
    q = v + (torch.round(v) - v).detach()
    return torch.clamp(q, qmin, b) * step


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_ste_mask_matches_plain_reference(axis):
    x = (torch.randn(5, 7, 3) * 2).requires_grad_()
    amax = torch.tensor(1.5) if axis is None else torch.rand(x.shape[axis]) + 0.5
    g = torch.randn_like(x)
    ops.fake_quant(x, amax, axis=axis).backward(g)
    shape = [1, 1, 1]
    if axis is not None:
        shape[axis] = -1
    a = amax.reshape(shape) if axis is not None else amax
    expected = torch.where((x.detach() <= a) & (x.detach() >= -a), g, torch.zeros_like(g))
    assert torch.equal(x.grad, expected)


def test_ste_boundary_passes_gradient():
    x = torch.tensor([-2.0, -1.0, 1.0, 2.0], requires_grad=True)
    ops.fake_quant(x, torch.tensor(1.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("axis", [None, 1])
def test_float64_gradient_passes_in_float64(axis):
    # The STE passes the incoming gradient unchanged: a float64 one keeps its 53-bit digits (it was
    # rounded to float32 once). Reference: the mask |x| <= amax applied with torch.where.
    x = torch.randn(4, 6, 5, dtype=torch.float64) * 2
    x[0, 0, :2] = torch.tensor([1.5, -1.5], dtype=torch.float64)  # exactly on the boundary: passes
    amax = torch.tensor(1.5, dtype=torch.float64) if axis is None else torch.full((6,), 1.5, dtype=torch.float64)
    g = torch.randn_like(x) * (1 + 2**-40)
    xr = x.clone().requires_grad_()
    ops.fake_quant(xr, amax, 8, False, False, axis).backward(g)
    assert torch.equal(xr.grad, torch.where(x.abs() <= 1.5, g, torch.zeros_like(g)))
    assert xr.grad[0, 0, 0] == g[0, 0, 0] and xr.grad.dtype == torch.float64


@pytest.mark.parametrize("axis", [None, 0, 2])
@pytest.mark.parametrize("unsigned,narrow", [(False, False), (False, True), (True, False)])
def test_lsq_amax_gradient_matches_autograd_reference(axis, unsigned, narrow):
    x = torch.randn(6, 4, 5, dtype=torch.float64) * 2
    if unsigned:
        x = x.abs()
    k = 1 if axis is None else x.shape[axis]
    amax0 = torch.rand(k, dtype=torch.float64) + 0.7
    shape = [1, 1, 1]
    if axis is not None:
        shape[axis] = k
    amax = amax0.reshape(shape).clone().requires_grad_() if axis is not None else amax0[0].clone().requires_grad_()
    g = torch.randn_like(x)
    ops.fake_quant(x.float(), amax.float(), 8, unsigned, narrow).backward(g.float())

    amax_ref = amax.detach().clone().requires_grad_()
    reference_fake_quant(x, amax_ref, 8, unsigned, narrow).backward(g)
    b = bound_of(8, unsigned)
    # LSQ's N_F: one sample's elements per amax entry; dim 0 (6) is the batch unless amax runs along it.
    n = x.numel() // k if axis == 0 else x.numel() // k // x.shape[0]
    lsq_scale = 1.0 / (n * b) ** 0.5
    assert amax.grad.shape == amax.shape
    torch.testing.assert_close(amax.grad.double(), amax_ref.grad * lsq_scale, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("amax_shape", [(), (6,), (1, 6, 5)], ids=["per_tensor", "axis1", "multi_axis"])
@pytest.mark.parametrize("e4m3", [False, True], ids=["int8", "e4m3"])
def test_lsq_amax_gradient_of_a_split_batch_averages_to_the_whole_batch(amax_shape, e4m3):
    # Data parallel: each of 2 ranks takes the mean loss over its half of the batch, and DDP
    # averages their gradients; that must equal one process's gradient over the whole batch.
    torch.manual_seed(4)
    x = torch.randn(8, 6, 5, dtype=torch.float64) * 2
    target = torch.randn_like(x)
    amax0 = torch.rand(amax_shape, dtype=torch.float64) + 0.7
    axis = 1 if amax_shape == (6,) else None

    def amax_grad(xs, ts):
        amax = amax0.clone().requires_grad_()
        y = ops.fake_quant_e4m3(xs, amax, axis) if e4m3 else ops.fake_quant(xs, amax, 8, False, False, axis)
        ((y - ts) ** 2).mean().backward()
        return amax.grad

    whole = amax_grad(x, target)
    ranks = [amax_grad(x[:4], target[:4]), amax_grad(x[4:], target[4:])]
    assert whole.abs().max() > 0
    torch.testing.assert_close((ranks[0] + ranks[1]) / 2, whole, rtol=1e-5, atol=0)  # float32 sums; a local-batch N: sqrt(2) off


def test_quantize_dequantize_round_trip_equals_fake_quant():
    x = torch.randn(8, 3, 4)
    amax = torch.rand(8) + 0.5
    q, scale = ops.quantize(x, amax, axis=0)
    assert q.dtype == torch.int8 and scale.shape == amax.shape
    assert torch.equal(ops.dequantize(q, scale, axis=0), ops.fake_quant(x, amax, axis=0))
    qu, _ = ops.quantize(x.abs(), torch.tensor(2.0), unsigned=True)
    assert qu.dtype == torch.uint8
    q16, _ = ops.quantize(x, torch.tensor(2.0), num_bits=12)
    assert q16.dtype == torch.int16
    qz, sz = ops.quantize(x, torch.tensor(0.0))
    assert torch.count_nonzero(qz) == 0 and sz.item() == 1.0


@pytest.mark.parametrize("bad,match", [
    (dict(amax=torch.tensor(-1.0)), "amax must be >= 0"),
    (dict(amax=torch.tensor(float("nan"))), "amax must be finite"),
    (dict(amax=torch.tensor(float("inf"))), "amax must be finite"),
    (dict(num_bits=1), "num_bits must be in \\[2, 16\\], got 1"),
    (dict(num_bits=17), "num_bits must be in \\[2, 16\\], got 17"),
    (dict(axis=4), "axis 4 is out of range"),
    (dict(axis=-5), "axis -5 is out of range"),
    (dict(amax=torch.ones(5), axis=1), "amax of shape \\[5\\] does not match x"),
    (dict(amax=torch.ones(3)), "no axis was given"),
    (dict(amax=torch.ones(2, 2, 1, 1)), "does not match x of shape \\[2, 3, 4, 5\\] in dim 1"),
])
def test_bad_inputs_name_the_argument(bad, match):
    args = dict(x=torch.randn(2, 3, 4, 5), amax=torch.tensor(1.0), num_bits=8, axis=None)
    args.update(bad)
    with pytest.raises((ValueError, RuntimeError), match=match):
        ops.fake_quant(args["x"], args["amax"], args["num_bits"], False, False, args["axis"])


def test_integer_x_is_a_type_error():
    with pytest.raises(TypeError, match="x must be float32"):
        ops.fake_quant(torch.arange(10), torch.tensor(1.0))


def test_registered_as_torch_op():
    assert hasattr(torch.ops.torchqat, "fake_quant")
    y = torch.ops.torchqat.fake_quant(torch.ones(3), torch.tensor(2.0))
    assert y.shape == (3,)
