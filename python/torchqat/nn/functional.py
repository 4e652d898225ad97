"""pytorch-quantization's `nn.functional`: `clip` and `ClipFunction` over torchqat's clip op.

The op (C++, CPU / CUDA / Meta, with its own autograd) computes max(min(x, max), min) with
bounds that broadcast to x, and the PACT gradient (Choi et al. 2018, also TensorFlow's
clip_by_value): x gets the gradient where min < x < max; min gets the sum of the gradient where
x <= min, max the sum where x >= max, each summed down to the bound's own shape.
"""
import torch

from .. import ops

__all__ = ["clip", "ClipFunction"]


def _bound(value, x):
    """A number becomes a float32 tensor on x's device; tensors pass as they are."""
    if torch.is_tensor(value):
        return value
    return torch.tensor(float(value), dtype=torch.float32, device=x.device)


def clip(input, clip_value_min, clip_value_max):
    """Clips input to [clip_value_min, clip_value_max] (numbers or tensors broadcasting to input)."""
    return ops.clip(input, _bound(clip_value_min, input), _bound(clip_value_max, input))


class ClipFunction(torch.autograd.Function):
    """`ClipFunction.apply(input, clip_value_min, clip_value_max)`, as in pytorch-quantization: the
    forward and backward are torchqat's clip and clip_backward ops."""

    @staticmethod
    def forward(ctx, input, clip_value_min, clip_value_max):
        lo, hi = _bound(clip_value_min, input), _bound(clip_value_max, input)
        ctx.save_for_backward(input, lo, hi)
        ctx.bound_is_tensor = (torch.is_tensor(clip_value_min), torch.is_tensor(clip_value_max))
        return ops.clip(input, lo, hi)

    @staticmethod
    def backward(ctx, grad_output):
        x, lo, hi = ctx.saved_tensors
        want_lo = ctx.needs_input_grad[1] and ctx.bound_is_tensor[0]
        want_hi = ctx.needs_input_grad[2] and ctx.bound_is_tensor[1]
        gx, glo, ghi = ops.clip_backward(grad_output, x, lo, hi, want_lo, want_hi)
        return (gx if ctx.needs_input_grad[0] else None, glo if want_lo else None, ghi if want_hi else None)
