"""Quantized element-wise add and concat, for TensorRT-friendly Q/DQ placement.

TensorRT fuses a residual add into the conv (int8 in, int8 out) when both add inputs are int8
with matching scales, and removes a concat (its producers write straight into the output
buffer) when all its inputs share one scale. These modules carry the quantizers that make that
possible: QuantConcat always has one quantizer for all inputs; QuantAdd has one per input,
the same object unless share_quantizer=False. torchqat.placement.share_scales ties them to
the quantizers of the neighbouring convs.

State-dict keys: `<add>._input0_quantizer._amax`, `<add>._input1_quantizer._amax` (as NVIDIA's
YOLOv5 QAT recipe names them), `<concat>._input_quantizer._amax`.
"""
import torch
from torch import nn

from . import _utils
from .tensor_quantizer import TensorQuantizer

__all__ = ["QuantAdd", "QuantConcat"]


class QuantAdd(nn.Module, _utils.QuantInputMixin):
    """x + y with each input fake-quantized.

    share_quantizer=True (the default, what TensorRT wants) makes both inputs use one quantizer
    object; False gives each input its own (calibrated separately).
    """

    def __init__(self, quant_desc_input=None, share_quantizer=True):
        super().__init__()
        desc = quant_desc_input if quant_desc_input is not None else self.default_quant_desc_input
        _utils._check_desc(desc, "quant_desc_input")
        if not desc.fake_quant:
            raise ValueError("Only fake quantization is supported!")
        self._input0_quantizer = TensorQuantizer(desc)
        self._input1_quantizer = self._input0_quantizer if share_quantizer else TensorQuantizer(desc)

    @property
    def input_quantizer(self):
        """The TensorQuantizer of the first summand (both, when shared)."""
        return self._input0_quantizer

    @property
    def shares_quantizer(self):
        """Whether both summands go through one quantizer."""
        return self._input0_quantizer is self._input1_quantizer

    def forward(self, x, y):
        return self._input0_quantizer(x) + self._input1_quantizer(y)

    @classmethod
    def from_float(cls, module=None, quant_desc_input=None):
        """A QuantAdd replacing a float add module (any module whose forward is x + y)."""
        q = cls(quant_desc_input)
        if module is not None:
            q.train(module.training)
        return q

    def extra_repr(self):
        return "shared" if self.shares_quantizer else "separate"


class QuantConcat(nn.Module, _utils.QuantInputMixin):
    """torch.cat(inputs, dim) with every input quantized by one shared input quantizer."""

    def __init__(self, dim=1, quant_desc_input=None):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"QuantConcat: dim must be an int, got {dim!r}")
        desc = quant_desc_input if quant_desc_input is not None else self.default_quant_desc_input
        self.init_quantizer(desc)
        self.dim = dim

    def forward(self, tensors):
        if not isinstance(tensors, (list, tuple)) or not tensors:
            raise ValueError("QuantConcat expects a non-empty list or tuple of tensors, "
                             f"got {type(tensors).__name__}")
        return torch.cat([self._input_quantizer(t) for t in tensors], self.dim)

    @classmethod
    def from_float(cls, module=None, quant_desc_input=None):
        """A QuantConcat replacing a float concat module; its dim is read from `dim` or `d` (YOLO's Concat)."""
        dim = 1
        if module is not None:
            dim = getattr(module, "dim", getattr(module, "d", 1))
        q = cls(dim, quant_desc_input)
        if module is not None:
            q.train(module.training)
        return q

    def extra_repr(self):
        return f"dim={self.dim}"
