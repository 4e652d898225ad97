"""reduce_amax: pytorch-quantization's abs-max reduction, computed by torchqat.abs_max.

`axis` names the dims to reduce (the opposite of a quantizer's axis, which names the dims
that keep their own amax). Shapes and errors follow pytorch-quantization 2.2.1:
- axis=None: a 0-d tensor;
- an int: that dim reduced, kept with length 1 unless keepdims=False;
- a tuple or list: those dims reduced and kept with length 1; then every length-1 dim is
  squeezed if keepdims=False or the result has one element. A tuple longer than the rank is a
  ValueError; a dim out of range an IndexError (as torch.max raises).
The result has the input's dtype. The abs-max itself is the operator's (computed in fp32, so
float64 and integer inputs are rounded to fp32 first); unlike pytorch-quantization, a NaN or
Inf in the input is a ValueError rather than a NaN amax, and an empty input a ValueError.
"""
import torch

from .. import ops

__all__ = ["reduce_amax"]


def _dim(d, rank):
    """d normalised to [0, rank) (a 0-d tensor takes 0 and -1, as torch does)."""
    if isinstance(d, bool) or not isinstance(d, int):
        raise TypeError(f"reduce_amax: axis entries must be ints, got {d!r}")
    lo, hi = (-1, 0) if rank == 0 else (-rank, rank - 1)
    if not lo <= d <= hi:
        raise IndexError(f"reduce_amax: dimension out of range (expected to be in range of [{lo}, {hi}], "
                         f"but got {d})")
    return d % rank if rank else 0


@torch.no_grad()
def reduce_amax(input, axis=None, keepdims=True):
    """Absolute maximum of `input` over `axis` (None: all dims), as pytorch-quantization's utils.reduce_amax."""
    if not torch.is_tensor(input):
        raise TypeError(f"reduce_amax: input must be a tensor, got {type(input).__name__}")
    x = input if input.is_floating_point() else input.to(torch.float32)
    if axis is None:
        return ops.abs_max(x, ()).to(input.dtype)
    if isinstance(axis, int) and not isinstance(axis, bool):
        reduce = {_dim(axis, input.dim())}
    else:
        if isinstance(axis, tuple) and len(axis) > input.dim():
            raise ValueError("Cannot reduce more axes than tensor's dim.")
        reduce = {_dim(d, input.dim()) for d in axis}
    keep = [d for d in range(input.dim()) if d not in reduce]
    kept_shape = [1 if d in reduce else s for d, s in enumerate(input.shape)]
    out = ops.abs_max(x, keep).reshape(kept_shape).to(input.dtype)
    if isinstance(axis, int) and not isinstance(axis, bool):
        return out if keepdims or input.dim() == 0 else out.squeeze(next(iter(reduce)))
    if not keepdims or out.numel() == 1:
        out = out.squeeze()
    return out
