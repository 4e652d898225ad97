"""Clip, nn.functional.clip and ClipFunction against pytorch-quantization's documented behaviour:
forward max(min(x, max), min) with broadcasting bounds; PACT gradient (x passes where
min < x < max; min gets the sum of the gradient where x <= min, max where x >= max)."""
import pytest
import torch

import torchqat
from torchqat import nn as quant_nn
from torchqat.nn import functional as QF
from torchqat.nn.modules.clip import Clip

needs_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and torchqat.cuda_compiled()),
                                reason="needs a CUDA GPU and a CUDA build")


def _reference(x, lo, hi):
    """Clip written with torch.where on the masks (bounds that do not cross): autograd routes the
    gradient to lo where x <= lo, to hi where x >= hi, to x elsewhere, and sums each bound's part
    down to its shape: the PACT rule."""
    return torch.where(x <= lo, lo, torch.where(x >= hi, hi, x))


def _grads(fn, x, lo, hi, g):
    x, lo, hi = (t.detach().clone().requires_grad_(True) for t in (x, lo, hi))
    y = fn(x, lo, hi)
    y.backward(g)
    return y.detach(), x.grad, lo.grad, hi.grad


@pytest.mark.parametrize("fn", [QF.clip, QF.ClipFunction.apply], ids=["clip", "ClipFunction"])
def test_scalar_bounds_values_and_pact_gradients(fn):
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.5, 2.0, 4.0])
    lo, hi = torch.tensor(-1.0), torch.tensor(1.5)
    g = torch.arange(1.0, 9.0)
    y, gx, glo, ghi = _grads(fn, x, lo, hi, g)
    assert y.tolist() == [-1.0, -1.0, -0.5, 0.0, 0.5, 1.5, 1.5, 1.5]
    # boundary values (x == min, x == max) send their gradient to the bound, not to x
    assert gx.tolist() == [0.0, 0.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0]
    assert glo.item() == 1.0 + 2.0
    assert ghi.item() == 6.0 + 7.0 + 8.0


@pytest.mark.parametrize("lo_shape,hi_shape", [((), ()), ((4, 1), ()), ((1, 5), (4, 1)), ((4, 5), (5,)),
                                               ((1, 1), (1, 5))])
def test_broadcast_bounds_match_autograd_reference(lo_shape, hi_shape):
    x = torch.randn(4, 5, dtype=torch.float64) * 2
    lo = -torch.rand(lo_shape, dtype=torch.float64) - 0.2
    hi = torch.rand(hi_shape, dtype=torch.float64) + 0.2
    g = torch.randn(4, 5, dtype=torch.float64)
    got = _grads(QF.clip, x, lo, hi, g)
    want = _grads(_reference, x, lo, hi, g)
    for a, b, what in zip(got, want, ("y", "grad x", "grad min", "grad max")):
        assert a.shape == b.shape, what
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=what)


def test_min_above_max_gives_min_like_pytorch_quantization():
    # max(min(x, max), min): min wins where the bounds cross (torch.clamp would give max).
    y = QF.clip(torch.tensor([0.0, 5.0]), torch.tensor(2.0), torch.tensor(1.0))
    assert y.tolist() == [2.0, 2.0]


def test_nan_input_propagates_and_sends_its_gradient_to_both_bounds():
    x = torch.tensor([float("nan"), 0.0], requires_grad=True)
    lo, hi = torch.tensor(-1.0, requires_grad=True), torch.tensor(1.0, requires_grad=True)
    y = QF.clip(x, lo, hi)
    assert torch.isnan(y[0]) and y[1] == 0
    y.backward(torch.tensor([2.0, 3.0]))
    assert x.grad.tolist() == [0.0, 3.0] and lo.grad.item() == 2.0 and hi.grad.item() == 2.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_input_keeps_dtype_and_matches_torch(dtype):
    x = (torch.randn(64) * 3).to(dtype)
    lo, hi = torch.tensor(-1.3), torch.tensor(0.7)
    y = QF.clip(x, lo, hi)
    assert y.dtype == dtype
    torch.testing.assert_close(y, torch.maximum(torch.minimum(x, hi.to(dtype)), lo.to(dtype)), rtol=0, atol=0)


def test_non_contiguous_and_channels_last_inputs():
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    lo = -torch.rand(1, 3, 1, 1)
    hi = torch.rand(1, 3, 1, 1)
    for inp in (x, x.transpose(1, 3), x[:, :, ::2]):
        assert inp.is_contiguous() is False
        l, h = (lo, hi) if inp.shape[1] == 3 else (lo.reshape(1, 1, 1, 3), hi.reshape(1, 1, 1, 3))
        g = torch.randn(inp.shape)
        got = _grads(QF.clip, inp, l, h, g)
        want = _grads(_reference, inp, l, h, g)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_bounds_that_do_not_broadcast_are_refused():
    with pytest.raises(ValueError, match=r"min of shape \[3\] does not broadcast to x of shape \[4, 5\]"):
        QF.clip(torch.randn(4, 5), torch.zeros(3), torch.ones(()))
    with pytest.raises(ValueError, match="max of shape"):
        QF.clip(torch.randn(5), torch.zeros(()), torch.ones(2, 5))


def test_integer_input_is_refused():
    with pytest.raises(TypeError, match="x must be float32, float16, bfloat16 or float64"):
        QF.clip(torch.arange(4), torch.tensor(0.0), torch.tensor(1.0))


def test_numbers_are_accepted_as_bounds():
    assert QF.clip(torch.tensor([-2.0, 0.25, 3.0]), -1, 1.0).tolist() == [-1.0, 0.25, 1.0]


def test_clip_module_learnable_bounds_train_by_pact():
    c = Clip(-1.0, 1.0, learn_min=True, learn_max=True)
    assert [n for n, _ in c.named_parameters()] == ["clip_value_min", "clip_value_max"]
    assert list(c.state_dict()) == ["clip_value_min", "clip_value_max"]
    assert c.clip_value_min.shape == () and c.clip_value_min.item() == -1.0
    x = torch.tensor([-2.0, -0.5, 0.5, 3.0, 5.0])
    c(x).sum().backward()
    assert c.clip_value_min.grad.item() == 1.0 and c.clip_value_max.grad.item() == 2.0


def test_clip_module_fixed_bounds_are_not_parameters():
    c = Clip(torch.tensor([-1.0, -2.0]), 0.5)
    assert list(c.parameters()) == []
    assert c(torch.tensor([[-3.0, -3.0], [1.0, 0.0]])).tolist() == [[-1.0, -2.0], [0.5, 0.0]]


def test_clip_module_learnable_bound_must_be_scalar():
    with pytest.raises(ValueError, match="clip_value_min must be a scalar"):
        Clip(torch.tensor([-1.0, -2.0]), 1.0, learn_min=True)
    with pytest.raises(ValueError, match="clip_value_max must be a scalar"):
        Clip(-1.0, [1.0, 2.0], learn_max=True)
    assert Clip(torch.tensor([-1.0]), 1.0, learn_min=True).clip_value_min.shape == ()


def test_reexported_names():
    assert quant_nn.Clip is Clip
    assert issubclass(QF.ClipFunction, torch.autograd.Function)
    assert torchqat.nn.functional.clip is QF.clip


def test_opcheck_and_compile():
    x = torch.randn(3, 4, requires_grad=True)
    lo, hi = torch.tensor(-0.5, requires_grad=True), torch.rand(3, 1, requires_grad=True)
    torch.library.opcheck(torch.ops.torchqat.clip.default, (x, lo, hi))
    fn = torch.compile(QF.clip, fullgraph=True, backend="aot_eager")
    y = fn(x, lo, hi)
    y.sum().backward()
    want = _grads(_reference, x, lo, hi, torch.ones(3, 4))
    torch.testing.assert_close(y, want[0])
    torch.testing.assert_close(lo.grad, want[2])
    torch.testing.assert_close(hi.grad, want[3])


@needs_cuda
def test_cuda_matches_cpu():
    x = torch.randn(33, 65) * 2
    lo, hi = -torch.rand(33, 1) - 0.1, torch.tensor(0.8)
    g = torch.randn(33, 65)
    cpu = _grads(QF.clip, x, lo, hi, g)
    gpu = _grads(QF.clip, x.cuda(), lo.cuda(), hi.cuda(), g.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=1e-5)
