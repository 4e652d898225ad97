"""pytorch-quantization's `cuda_ext` functions, calling torchqat's fake_quant operator.

Same names, arguments and defaults (narrow_range=True) as pytorch_quantization.cuda_ext. Unlike
it they run on every device the operator has a kernel for (CPU too), honour narrow_range on CUDA,
and validate amax in the operator (negative, NaN or a wrong per-axis length is an error, not a
device-side assert). `fake_e4m3fy` is torchqat's FP8 E4M3 operator with scale 1 (saturating at
+-448, where the extension's CPU fallback and torch's own cast give NaN past 464).
"""
import torch

from . import ops

__all__ = ["fake_tensor_quant", "fake_tensor_quant_", "fake_tensor_quant_with_axis", "fake_e4m3fy"]


def _amax(inputs, amax):
    if not torch.is_tensor(amax):
        raise TypeError(f"amax must be a tensor, got {type(amax).__name__}")
    return amax.to(inputs.device)


def fake_tensor_quant(inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Fake-quantized copy of inputs with one amax for the whole tensor."""
    return ops.fake_quant(inputs, _amax(inputs, amax), num_bits, unsigned, narrow_range, None)


def fake_tensor_quant_(inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
    """In-place fake_tensor_quant; returns None, as the extension does."""
    with torch.no_grad():
        inputs.copy_(fake_tensor_quant(inputs, amax, num_bits, unsigned, narrow_range))


def fake_tensor_quant_with_axis(inputs, amax, axis, num_bits=8, unsigned=False, narrow_range=True):
    """Fake-quantized copy of inputs with one amax per index of `axis` (amax: 1-d, inputs.size(axis) values)."""
    return ops.fake_quant(inputs, _amax(inputs, amax).reshape(-1), num_bits, unsigned, narrow_range, axis)


def fake_e4m3fy(inputs):
    """inputs rounded to the nearest float8_e4m3fn value (ties to even, saturating at +-448), in inputs' dtype."""
    return ops.fake_quant_e4m3(inputs, torch.tensor(448.0, device=inputs.device), None)
