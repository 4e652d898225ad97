"""Clip: pytorch-quantization's clip module (torchqat.nn.functional.clip with stored bounds)."""
import numbers

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import Parameter

from .. import functional as QF

__all__ = ["Clip"]


def _numel(value):
    return value.numel() if torch.is_tensor(value) else np.size(value)


def _learnable(value, name):
    """A learnable bound starts from one number (a float, or a one-element tensor / array)."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or _numel(value) == 1):
        shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
        raise ValueError(f"{name} must be a scalar to initialize a learnable range, got a value of shape {shape}")
    if torch.is_tensor(value):
        return Parameter(value.detach().to(torch.float32).reshape(()).clone())
    return Parameter(torch.tensor(float(np.asarray(value).reshape(())), dtype=torch.float32))


class Clip(nn.Module):
    """Clips its input to [clip_value_min, clip_value_max].

    Args (pytorch-quantization's): clip_value_min, clip_value_max (numbers or tensors that
    broadcast to the input), learn_min / learn_max (the bound becomes the Parameter
    `clip_value_min` / `clip_value_max`, trained by the PACT gradient; it must be a scalar,
    else ValueError).
    """

    def __init__(self, clip_value_min, clip_value_max, learn_min=False, learn_max=False):
        super().__init__()
        self.clip_value_min = _learnable(clip_value_min, "clip_value_min") if learn_min else clip_value_min
        self.clip_value_max = _learnable(clip_value_max, "clip_value_max") if learn_max else clip_value_max

    def forward(self, inputs):
        return QF.clip(inputs, self.clip_value_min, self.clip_value_max)

    def extra_repr(self):
        def show(v):
            return f"{v.item():.4f}" if torch.is_tensor(v) and v.numel() == 1 else repr(v)
        return f"clip_value_min={show(self.clip_value_min)}, clip_value_max={show(self.clip_value_max)}"
