"""CUDA abs_max and histogram_abs against the CPU kernels, bit for bit (skipped without a GPU or a
CUDA build); inputs at a storage offset (gpu_views.on_gpu) reach the unaligned variants."""
import pytest
import torch

from conftest import cuda
from gpu_views import on_gpu
from test_fake_quant_cuda import _kernel_names
from torchqat import ops

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


@cuda
def test_cuda_abs_max_has_its_own_kernel():
    # The op also has a composite (ATen) body that any device would fall back to.
    assert torch._C._dispatch_has_kernel_for_dispatch_key("torchqat::abs_max", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("torchqat::histogram_abs", "CUDA")


@cuda
@pytest.mark.parametrize("shape,keep,cl", [
    ((1_000_003,), [], False), ((64, 3, 3, 3), [0], False), ((8, 64, 14, 14), [1], False),
    ((8, 64, 14, 14), [1], True), ((8, 64, 3, 3), [1], False), ((4, 1000), [1], False),
    ((3, 8, 33), [0, 2], False), ((5, 4, 3), [0, 1, 2], False), ((4, 300_000), [0], False),
    ((7, 4096), [0], False),
])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1])
def test_cuda_abs_max_equals_cpu(shape, keep, cl, dtype, offset):
    x = (torch.randn(*shape) * 3).to(dtype)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    xg = on_gpu(x, offset)
    out = []
    names = _kernel_names(lambda: out.append(ops.abs_max(xg, keep)))
    assert any("torchqat" in n for n in names), names  # our kernel, not an ATen reduction
    assert torch.equal(out[0].cpu(), ops.abs_max(x, keep))


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1])
def test_cuda_abs_max_refuses_non_finite(dtype, offset):
    for bad, word in ((float("nan"), "NaN"), (float("inf"), "Inf")):
        x = torch.randn(4, 1001).to(dtype)
        x[2, 777] = bad
        for keep in ([], [0]):
            with pytest.raises(ValueError, match=word):
                ops.abs_max(on_gpu(x, offset), keep)


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("skip_zeros", [False, True])
def test_cuda_histogram_equals_cpu(dtype, offset, skip_zeros):
    x = (torch.randn(1_000_003) * 2).to(dtype)
    x[::3] = 0  # ReLU-like zeros: one hot bin, or none with skip_zeros
    x[5], x[1000], x[-2] = float("nan"), float("inf"), -float("inf")  # never counted
    xg = on_gpu(x, offset)
    # Shared-memory bins with 4 replicas, with fewer, and global-memory bins.
    for bins in (2048, 20_000, 200_000):
        h_cpu = torch.zeros(bins, dtype=torch.long)
        h_gpu = h_cpu.cuda()
        torch.ops.torchqat.histogram_abs(x, h_cpu, 8.0 / bins, skip_zeros)
        torch.ops.torchqat.histogram_abs(xg, h_gpu, 8.0 / bins, skip_zeros)
        assert torch.equal(h_gpu.cpu(), h_cpu)
        finite = torch.isfinite(x) & ((x != 0) if skip_zeros else True)
        assert h_cpu.sum().item() == finite.sum().item()


@cuda
def test_cuda_histogram_accumulates_and_keeps_the_tail_bin():
    x = torch.tensor([0.05, 0.15, 9.0, 1e30, 0.0] * 1000)
    h_gpu, h_cpu = torch.full((4,), 7, dtype=torch.long, device="cuda"), torch.full((4,), 7, dtype=torch.long)
    for _ in range(2):
        torch.ops.torchqat.histogram_abs(x.cuda(), h_gpu, 0.1, False)
        torch.ops.torchqat.histogram_abs(x, h_cpu, 0.1, False)
    assert torch.equal(h_gpu.cpu(), h_cpu)
    assert h_cpu.tolist() == [7 + 4000, 7 + 2000, 7, 7 + 4000]
