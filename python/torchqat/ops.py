"""Thin typed access to torchqat's operators (torch.ops.torchqat.*)."""
import torch

_ops = torch.ops.torchqat


def fake_quant(x, amax, num_bits=8, unsigned=False, narrow_range=False, axis=None):
    """torch.ops.torchqat.fake_quant: quantize and dequantize x with amax (the STE backward)."""
    return _ops.fake_quant(x, amax, num_bits, unsigned, narrow_range, axis)


def fake_quant_e4m3(x, amax, axis=None):
    """torch.ops.torchqat.fake_quant_e4m3: FP8 E4M3 fake quantization, scale 448 / amax, saturating (STE backward)."""
    return _ops.fake_quant_e4m3(x, amax, axis)


def fake_affine_quant(x, min_range, max_range, num_bits=8):
    """torch.ops.torchqat.fake_affine_quant: asymmetric fake quantization over [min_range, max_range]."""
    return _ops.fake_affine_quant(x, min_range, max_range, num_bits)


def quantize(x, amax, num_bits=8, unsigned=False, narrow_range=False, axis=None):
    """torch.ops.torchqat.quantize: (integer-valued q, scale) of x with amax."""
    return _ops.quantize(x, amax, num_bits, unsigned, narrow_range, axis)


def dequantize(q, scale, axis=None, dtype=None):
    """torch.ops.torchqat.dequantize: q * scale."""
    return _ops.dequantize(q, scale, axis, dtype)


def abs_max(x, keep_dims=()):
    """abs-max of x over every dim not in keep_dims, shaped to broadcast against x."""
    return _ops.abs_max(x, list(keep_dims))


def fake_quant_blocked(x, amax, block_size, num_bits=8, unsigned=False, narrow_range=False):
    """torch.ops.torchqat.fake_quant_blocked: fake quantization of a 2-d x with one amax per block of
    block_size elements along dim 1 (amax [out, in / block_size], ONNX opset 21's blocked layout)."""
    return _ops.fake_quant_blocked(x, amax, block_size, num_bits, unsigned, narrow_range)


def abs_max_blocked(x, block_size):
    """torch.ops.torchqat.abs_max_blocked: the abs-max of each block of fake_quant_blocked's layout."""
    return _ops.abs_max_blocked(x, block_size)


def clip(x, min, max):
    """max(min(x, max), min) with broadcasting tensor bounds; PACT gradient to the bounds."""
    return _ops.clip(x, min, max)


def clip_backward(grad, x, min, max, min_grad=True, max_grad=True):
    """torch.ops.torchqat.clip_backward: (grad_x, grad_min, grad_max) of clip (PACT)."""
    return _ops.clip_backward(grad, x, min, max, min_grad, max_grad)
