"""CUDA kernels against the CPU kernels, bit for bit (skipped without a GPU or a CUDA build).

Inputs are placed on the GPU with `on_gpu`, which can put them at an element offset inside a larger
allocation: a real view with a storage offset, so the kernels' one-element (unaligned) variants run,
which copying a CPU slice to the GPU (a fresh, aligned allocation) never reaches.
"""
import re

import pytest
import torch

from conftest import cuda
from gpu_views import on_gpu
from torchqat import ops

_fq_bwd = torch.ops.torchqat.fake_quant_backward
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# (shape, axis, channels_last): per tensor; per channel with rows a multiple of the vector
# (kRow), with odd rows (per element), channels-last (cyclic); n % VEC != 0 tails throughout.
LAYOUTS = [((64, 32, 9, 7), None, False), ((64, 32, 9, 7), 0, False), ((64, 32, 9, 7), 1, False),
           ((64, 32, 9, 7), 1, True), ((16, 32, 8, 8), 1, False), ((8, 33, 5), 2, False),
           ((1000003,), None, False), ((5, 3), 1, False), ((37,), None, False)]


def _inputs(shape, axis, channels_last, dtype, unsigned=False):
    x = (torch.randn(shape) * 3).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if axis is None:
        amax = torch.tensor(2.0)
    else:
        amax = torch.rand(shape[axis]) * 3
        amax[0] = 0.0  # a channel that quantizes to zero
    return x, amax


def _check_fwd_bwd(x, amax, axis, offset, num_bits=8, unsigned=False, narrow=False):
    y_cpu = ops.fake_quant(x, amax, num_bits, unsigned, narrow, axis)
    xg, ag = on_gpu(x, offset), amax.cuda()
    y_gpu = ops.fake_quant(xg, ag, num_bits, unsigned, narrow, axis)
    assert torch.equal(y_gpu.cpu(), y_cpu)

    # Backward through the op itself, so the grad can be an unaligned view too; both with a
    # learned amax (LSQ gradient) and a frozen one (no dstep buffer: the common QAT case).
    # Drawn in float64: a float64 gradient must pass without losing digits to float32.
    g = torch.randn(x.shape, dtype=torch.float64).to(x.dtype)
    if x.dim() == 4 and not x.is_contiguous():
        g = g.contiguous(memory_format=torch.channels_last)  # x's strides, so the op takes it as is
    gg = on_gpu(g, offset)
    for amax_grad in (False, True):
        gx_cpu, ga_cpu = _fq_bwd(g, x, amax, num_bits, unsigned, narrow, axis, amax_grad)
        gx_gpu, ga_gpu = _fq_bwd(gg, xg, ag, num_bits, unsigned, narrow, axis, amax_grad)
        assert torch.equal(gx_gpu.cpu(), gx_cpu)
        if amax_grad:
            # dstep is equal element by element; its sum runs in a device-specific order.
            torch.testing.assert_close(ga_gpu.cpu(), ga_cpu, rtol=1e-4, atol=1e-6)
        else:
            assert ga_gpu is None and ga_cpu is None


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis,channels_last", LAYOUTS)
@pytest.mark.parametrize("offset", [0, 1])
def test_cuda_equals_cpu(dtype, shape, axis, channels_last, offset):
    x, amax = _inputs(shape, axis, channels_last, dtype)
    _check_fwd_bwd(x, amax, axis, offset)


@cuda
@pytest.mark.parametrize("num_bits,unsigned,narrow", [(4, False, False), (8, True, False), (8, False, True),
                                                      (16, False, False), (2, True, True), (5, False, True)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1])
def test_cuda_ranges_equal_cpu(num_bits, unsigned, narrow, dtype, offset):
    for shape, axis, cl in [((1000003,), None, False), ((8, 16, 5, 5), 1, True), ((12, 40), 0, False)]:
        x, amax = _inputs(shape, axis, cl, dtype)
        _check_fwd_bwd(x, amax, axis, offset, num_bits, unsigned, narrow)


@cuda
def test_cuda_float64_computes_in_double():
    # float32 arithmetic would give 0.29921260476112366 (the product rounded to float).
    x = torch.tensor([0.3], dtype=torch.float64)
    y = ops.fake_quant(x.cuda(), torch.tensor(2.0, device="cuda"))
    assert y.item() == ops.fake_quant(x, torch.tensor(2.0)).item() == 0.29921259731054306


@cuda
def test_cuda_special_values_equal_cpu():
    vals = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e30, -1e-30, 2.0, -2.0, 2.0 + 2**-20, 1.0 / 254]
    for dtype in DTYPES:
        x = torch.tensor(vals * 37, dtype=dtype)
        for amax in (torch.tensor(2.0), torch.tensor(0.0), torch.tensor(1e-39)):
            for offset in (0, 1):
                y_cpu = ops.fake_quant(x, amax)
                y_gpu = ops.fake_quant(on_gpu(x, offset), amax.cuda()).cpu()
                assert torch.equal(y_gpu.isnan(), y_cpu.isnan())
                assert torch.equal(y_gpu.nan_to_num(), y_cpu.nan_to_num())
                assert torch.equal(torch.signbit(y_gpu), torch.signbit(y_cpu))


def _kernel_names(fn):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


@cuda
def test_cuda_vector_width_follows_alignment():
    x = torch.randn(4099)
    amax = torch.tensor(1.0, device="cuda")
    for offset, vec in ((0, 4), (1, 1)):
        xg = on_gpu(x, offset)
        names = _kernel_names(lambda: ops.fake_quant(xg, amax))
        assert any(re.search(rf"fq_kernel<float, {vec}, 0, unsigned int>", n) for n in names), names
        names = _kernel_names(lambda: _fq_bwd(xg, xg, amax, 8, False, False, None, False))
        assert any(re.search(rf"bwd_kernel<float, {vec}, 0, unsigned int>", n) for n in names), names


@cuda
@pytest.mark.parametrize("op", ["fake_quant", "fake_quant_backward", "abs_max", "histogram_abs"])
def test_cuda_runs_on_the_current_stream(op):
    # The default stream is held back behind an event the test controls (recorded after a long
    # device sleep on a third stream); the op runs on side stream s, whose result is read on s.
    # A launch on the default stream would not have run yet, and s would read unwritten memory.
    x_cpu = torch.randn(1 << 20)
    x = x_cpu.cuda()
    amax = torch.tensor(1.0, device="cuda")

    def run(xd, a):
        if op == "fake_quant":
            return ops.fake_quant(xd, a)
        if op == "fake_quant_backward":
            return _fq_bwd(xd, xd, a, 8, False, False, None, False)[0]
        if op == "abs_max":
            return ops.abs_max(xd)
        h = torch.zeros(300, dtype=torch.long, device=xd.device)
        torch.ops.torchqat.histogram_abs(xd, h, 0.01, False)
        return h

    ref = run(x_cpu, torch.tensor(1.0))
    # Kernels loaded and memory cached first, with other data, so nothing below has to synchronise
    # and no cached block holds the answer; the pinned buffer likewise.
    run(x * 0.5, amax)
    host = torch.empty(ref.shape, dtype=ref.dtype, pin_memory=True)
    torch.cuda.synchronize()
    s, blocker, gate = torch.cuda.Stream(), torch.cuda.Stream(), torch.cuda.Event()
    s.wait_stream(torch.cuda.current_stream())  # x and amax come from the default stream
    with torch.cuda.stream(blocker):
        torch.cuda._sleep(1 << 30)  # around half a second: far longer than the launch and copy
        gate.record(blocker)
    torch.cuda.default_stream().wait_event(gate)
    with torch.cuda.stream(s):
        y = run(x, amax)
        host.copy_(y, non_blocking=True)
        s.synchronize()
        assert not blocker.query(), "the sleep ended before the check: it proves nothing"
    torch.cuda.synchronize()
    assert torch.equal(host, ref)


@cuda
def test_cuda_device_mismatch_errors():
    x = torch.randn(1 << 10, device="cuda")
    with pytest.raises(ValueError, match="amax is on cpu"):
        ops.fake_quant(x, torch.tensor(1.0))


two_gpus = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                              reason="needs two CUDA GPUs")


@cuda
@two_gpus
def test_cuda_device_1_equals_cpu():
    # Current device 0, tensors on device 1: the kernels must run on (and read) device 1.
    torch.cuda.set_device(0)
    x, amax = _inputs((64, 32, 9, 7), 1, True, torch.float32)
    xg, ag = on_gpu(x, 1, "cuda:1"), amax.to("cuda:1")
    y = ops.fake_quant(xg, ag, 8, False, False, 1)
    assert y.device == torch.device("cuda:1")
    assert torch.equal(y.cpu(), ops.fake_quant(x, amax, 8, False, False, 1))
    gx, ga = _fq_bwd(xg, xg, ag, 8, False, False, 1, True)
    gx_cpu, ga_cpu = _fq_bwd(x, x, amax, 8, False, False, 1, True)
    assert torch.equal(gx.cpu(), gx_cpu)
    torch.testing.assert_close(ga.cpu(), ga_cpu, rtol=1e-4, atol=1e-6)
    assert torch.equal(ops.abs_max(xg, [1]).cpu(), ops.abs_max(x, [1]))
    h, h_cpu = torch.zeros(512, dtype=torch.long, device="cuda:1"), torch.zeros(512, dtype=torch.long)
    torch.ops.torchqat.histogram_abs(xg, h, 0.02, True)
    torch.ops.torchqat.histogram_abs(x, h_cpu, 0.02, True)
    assert torch.equal(h.cpu(), h_cpu)


@cuda
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40 << 30,
                    reason="needs a GPU with 40 GB")
@pytest.mark.parametrize("axis", [None, 0])
def test_cuda_beyond_2_31_elements(axis):
    # 4 x (2^29 + 17) half elements: offsets past 2^31 take the 64-bit path; the last elements
    # (and a channel's tail) are checked against the CPU on slices.
    x = torch.randn(4, (1 << 29) + 17, device="cuda", dtype=torch.float16) * 3
    amax = torch.tensor([2.0, 1.5, 0.0, 2.5], device="cuda") if axis == 0 else torch.tensor(2.0, device="cuda")
    y = ops.fake_quant(x, amax, 8, False, False, axis)
    gx = _fq_bwd(x, x, amax, 8, False, False, axis, False)[0]
    for c in range(4):
        a = (amax[c] if axis == 0 else amax).cpu()
        for sl in (slice(0, 4096), slice(-4099, None)):
            xs = x[c, sl].cpu()
            assert torch.equal(y[c, sl].cpu(), ops.fake_quant(xs, a)), (c, sl)
            assert torch.equal(gx[c, sl].cpu(), _fq_bwd(xs, xs, a, 8, False, False, None, False)[0]), (c, sl)
    del y, gx
    assert ops.abs_max(x).item() == x.abs().max().item()
    h = torch.zeros(64, dtype=torch.long, device="cuda")
    torch.ops.torchqat.histogram_abs(x, h, 0.25, False)
    assert h.sum().item() == x.numel()
