"""torchqat.utils: reduce_amax (pytorch-quantization's shapes and errors) and quant_logging."""
import logging

import pytest
import torch

from torchqat import utils
from torchqat.utils import quant_logging, reduce_amax


def _reference(x, axis=None, keepdims=True):
    """pytorch-quantization 2.2.1's reduce_amax, re-derived from its documented behaviour with torch.max."""
    out = x.abs()
    if axis is None:
        return torch.max(out)
    if isinstance(axis, int):
        return torch.max(out, dim=axis, keepdim=keepdims)[0]
    for i in axis:
        out = torch.max(out, dim=i, keepdim=True)[0]
    if not keepdims or out.numel() == 1:
        out = out.squeeze()
    return out


CASES = [None, 0, 1, -1, 2, (0,), (1,), (0, 2), (-1, 0), [1, 2], (0, 1, 2), (1, 1)]


@pytest.mark.parametrize("axis", CASES)
@pytest.mark.parametrize("keepdims", [True, False])
def test_reduce_amax_matches_the_reference(axis, keepdims):
    x = torch.randn(3, 4, 5)
    got, want = reduce_amax(x, axis=axis, keepdims=keepdims), _reference(x, axis, keepdims)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.equal(got, want)


def test_reduce_amax_shapes():
    x = torch.randn(2, 1, 3)
    assert reduce_amax(x).shape == ()
    assert reduce_amax(x, axis=0).shape == (1, 1, 3)
    assert reduce_amax(x, axis=0, keepdims=False).shape == (1, 3)
    # A tuple squeezes every length-1 dim when keepdims=False, the one that was length 1 already too.
    assert reduce_amax(x, axis=(0,), keepdims=False).shape == (3,)
    assert reduce_amax(torch.randn(1, 1), axis=(0,)).shape == ()  # numel 1: squeezed even with keepdims
    assert reduce_amax(torch.tensor(-2.5), axis=0).item() == 2.5


def test_reduce_amax_dtype_and_no_grad():
    x = torch.randn(4, 4, dtype=torch.float16, requires_grad=True)
    out = reduce_amax(x, axis=1)
    assert out.dtype == torch.float16 and not out.requires_grad
    assert torch.equal(out, _reference(x.detach(), 1))
    ints = torch.tensor([[-3, 2], [1, -7]])
    assert torch.equal(reduce_amax(ints, axis=0), torch.tensor([[3, 7]]))


def test_reduce_amax_errors():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="Cannot reduce more axes than tensor's dim."):
        reduce_amax(x, axis=(0, 1, 1))
    with pytest.raises(IndexError, match="out of range"):
        reduce_amax(x, axis=2)
    with pytest.raises(IndexError, match="out of range"):
        reduce_amax(x, axis=(0, -3))
    with pytest.raises(ValueError, match="contains NaN"):  # never a silent NaN amax
        reduce_amax(torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="input must be a tensor"):
        reduce_amax([1.0, 2.0])


def test_utils_exports_the_function():
    assert utils.reduce_amax is reduce_amax and callable(utils.reduce_amax)


def test_reset_logger_handler_removes_root_handlers():
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        root.addHandler(logging.NullHandler())
        root.addHandler(logging.StreamHandler())
        quant_logging.reset_logger_handler()
        assert root.handlers == []
    finally:
        root.handlers[:] = saved
