"""Quantized element-wise add and concat, for TensorRT-friendly Q/DQ placement.

TensorRT fuses a residual add into the conv when both add inputs are int8 with matching
scales, and removes a concat when all its inputs share one scale; these modules carry the
quantizers that make that possible (QuantConcat always shares one).
"""
import torch
from torch import nn

from . import _utils
from .tensor_quantizer import TensorQuantizer

__all__ = ["QuantAdd", "QuantConcat"]


class QuantAdd(nn.Module, _utils.QuantInputMixin):
    """x + y with each input fake-quantized; share_quantizer=True makes both use one quantizer."""

    def __init__(self, quant_desc_input=None, share_quantizer=True):
        super().__init__()
        desc = quant_desc_input if quant_desc_input is not None else self.default_quant_desc_input
        _utils._check_desc(desc, "quant_desc_input")
        self._input0_quantizer = TensorQuantizer(desc)
        self._input1_quantizer = self._input0_quantizer if share_quantizer else TensorQuantizer(desc)

    @property
    def input_quantizer(self):
        return self._input0_quantizer

    def forward(self, x, y):
        return self._input0_quantizer(x) + self._input1_quantizer(y)


class QuantConcat(nn.Module, _utils.QuantInputMixin):
    """torch.cat of inputs quantized by one shared input quantizer."""

    def __init__(self, dim=1, quant_desc_input=None):
        super().__init__()
        desc = quant_desc_input if quant_desc_input is not None else self.default_quant_desc_input
        _utils._check_desc(desc, "quant_desc_input")
        self.dim = dim
        self._input_quantizer = TensorQuantizer(desc)

    def forward(self, tensors):
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise ValueError("QuantConcat expects a non-empty list or tuple of tensors")
        return torch.cat([self._input_quantizer(t) for t in tensors], self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"
