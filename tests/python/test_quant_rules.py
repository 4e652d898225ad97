"""The quantization rules bound from C++ (torchqat._C) against their definitions, and the Python
callers that use them instead of their own copies."""
import math

import pytest
import torch

import torchqat
from torchqat import _C, nn as qnn
from torchqat.tensor_quant import QuantDescriptor


@pytest.mark.parametrize("b", range(2, 17))
def test_bound_and_min_against_the_definition(b):
    assert _C.quant_bound(b, False) == 2 ** (b - 1) - 1
    assert _C.quant_bound(b, True) == 2 ** b - 1
    assert _C.quant_min(b, False, False) == -(2 ** (b - 1))
    assert _C.quant_min(b, False, True) == -(2 ** (b - 1)) + 1
    assert _C.quant_min(b, True, False) == 0 and _C.quant_min(b, True, True) == 0


def test_num_bits_range_and_message():
    assert (_C.MIN_NUM_BITS, _C.MAX_NUM_BITS) == (2, 16)
    _C.check_num_bits("f", 2)
    _C.check_num_bits("f", 16)
    for bad in (1, 17, 0, -3):
        with pytest.raises(ValueError, match=rf"^g: num_bits must be in \[2, 16\], got {bad}$"):
            _C.check_num_bits("g", bad)
    with pytest.raises(ValueError, match=r"num_bits must be in \[2, 16\], got 1"):
        _C.quant_bound(1, False)


def test_amax_check_and_messages():
    _C.check_amax("f", torch.tensor([0.0, -0.0, 2.0]))
    _C.check_amax("f", torch.empty(0))
    with pytest.raises(ValueError, match=r"^op: amax must be >= 0, got -2"):
        _C.check_amax("op", torch.tensor([1.0, -2.0, -1.0]))
    with pytest.raises(ValueError, match=r"^op: amax must be finite, got NaN \(amax shape \[2\]\)"):
        _C.check_amax("op", torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match=r"^op: amax must be finite, got Inf"):
        _C.check_amax("op", torch.tensor(float("inf")))


def test_amax_axes():
    assert _C.amax_axes([]) == [] and _C.amax_axes([1, 1, 1]) == []
    assert _C.amax_axes([4, 1, 1, 1]) == [0]
    assert _C.amax_axes([1, 8, 1, 1]) == [1]
    assert _C.amax_axes([4, 8, 1]) == [0, 1]


def test_qdq_scale_against_the_definition():
    tiny = torch.finfo(torch.float32).tiny  # amax / 127 of it is subnormal
    amax = torch.tensor([2.54, 0.0, tiny, 1.0], dtype=torch.float64)
    s = _C.qdq_scale(amax, 127.0, _C.ZERO_AMAX_SCALE)
    want = amax.float() / 127.0
    want[want < tiny] = 2.0 ** -24
    assert s.dtype == torch.float32 and torch.equal(s, want)
    assert _C.ZERO_AMAX_SCALE == 2.0 ** -24


def test_lsq_sample_count_against_the_definition():
    # One sample's elements per amax entry; dim 0 is the batch unless amax runs along it.
    assert _C.lsq_sample_count([8, 3, 4, 5], 1, False) == 3 * 4 * 5
    assert _C.lsq_sample_count([8, 3, 4, 5], 3, False) == 4 * 5
    assert _C.lsq_sample_count([2, 3, 4, 5], 3, False) == 4 * 5  # a shard of the batch: the same N
    assert _C.lsq_sample_count([16, 3, 3, 3], 16, True) == 27  # a conv weight per output channel
    assert _C.lsq_sample_count([0, 3], 1, False) == 1 and _C.lsq_sample_count([], 1, False) == 1


def test_lsq_sample_count_is_the_one_fake_quant_scales_by():
    # fake_quant's amax gradient of sum(y) where every |x| > amax: each element contributes
    # d y / d step = +-bound exactly, so the gradient is count_clipped * bound * scale.
    x = torch.full((4, 3, 5), 3.0)
    amax = torch.tensor(1.0, requires_grad=True)
    torchqat.ops.fake_quant(x, amax).sum().backward()
    n = _C.lsq_sample_count(list(x.shape), 1, False)
    assert n == 15
    want = x.numel() * 127 / (math.sqrt(n * 127) * 127)
    assert amax.grad.item() == pytest.approx(want, rel=1e-6)


def test_python_callers_use_the_rules():
    for b, u in ((8, False), (8, True), (4, False), (16, True)):
        q = qnn.TensorQuantizer(QuantDescriptor(num_bits=b, unsigned=u))
        assert q.maxbound == _C.quant_bound(b, u)
    # The Python descriptor raises the C++ descriptor's message.
    with pytest.raises(ValueError, match=r"^QuantDescriptor: num_bits must be in \[2, 16\], got 1$"):
        QuantDescriptor(num_bits=1)
    from torchqat.onnx import ZERO_AMAX_SCALE
    assert ZERO_AMAX_SCALE == _C.ZERO_AMAX_SCALE
