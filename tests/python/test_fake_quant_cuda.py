"""CUDA kernels against the CPU kernels, bit for bit (skipped without a GPU)."""
import pytest
import torch

from conftest import cuda
from torchqat import ops


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape,axis", [((64, 32, 9, 7), None), ((64, 32, 9, 7), 0), ((64, 32, 9, 7), 1),
                                        ((8, 33, 5), 2), ((1000003,), None), ((5, 3), 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_equals_cpu(dtype, shape, axis, channels_last):
    x = (torch.randn(shape) * 3).to(dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    amax = torch.tensor(2.0) if axis is None else torch.rand(shape[axis]) * 3
    if axis is not None:
        amax[0] = 0.0
    y_cpu = ops.fake_quant(x, amax, 8, False, False, axis)
    y_gpu = ops.fake_quant(x.cuda(), amax.cuda(), 8, False, False, axis)
    assert torch.equal(y_gpu.cpu(), y_cpu)

    xr = x.clone().requires_grad_()
    ar = amax.clone().requires_grad_()
    g = torch.randn(shape).to(dtype)
    ops.fake_quant(xr, ar, 8, False, False, axis).backward(g)
    xg = x.cuda().requires_grad_()
    ag = amax.cuda().requires_grad_()
    ops.fake_quant(xg, ag, 8, False, False, axis).backward(g.cuda())
    assert torch.equal(xg.grad.cpu(), xr.grad)
    torch.testing.assert_close(ag.grad.cpu(), ar.grad, rtol=1e-4, atol=1e-6)


@cuda
def test_cuda_uses_current_stream_and_device_mismatch_errors():
    x = torch.randn(1 << 20, device="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = ops.fake_quant(x, torch.tensor(1.0, device="cuda"))
    s.synchronize()
    assert torch.equal(y.cpu(), ops.fake_quant(x.cpu(), torch.tensor(1.0)))
    with pytest.raises(ValueError, match="amax is on cpu"):
        ops.fake_quant(x, torch.tensor(1.0))
