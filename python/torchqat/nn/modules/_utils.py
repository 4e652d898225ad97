"""Mixins that give a torch.nn module its quantizers, with pytorch-quantization's names."""
import copy

from ...tensor_quant import QUANT_DESC_8BIT_PER_TENSOR, QuantDescriptor
from .tensor_quantizer import TensorQuantizer

__all__ = ["QuantMixin", "QuantInputMixin", "pop_quant_desc_in_kwargs"]


def _check_desc(desc, what):
    if not isinstance(desc, QuantDescriptor):
        raise ValueError(f"{what} must be a QuantDescriptor, got {type(desc).__name__}")


class QuantInputMixin:
    """A module with one input quantizer (pooling and the like)."""

    default_quant_desc_input = QUANT_DESC_8BIT_PER_TENSOR

    @classmethod
    def set_default_quant_desc_input(cls, value):
        _check_desc(value, "quant_desc_input")
        cls.default_quant_desc_input = copy.deepcopy(value)

    def init_quantizer(self, quant_desc_input):
        self._fake_quant = True
        if not quant_desc_input.fake_quant:
            raise ValueError("Only fake quantization is supported!")
        self._input_quantizer = TensorQuantizer(quant_desc_input)

    @property
    def input_quantizer(self):
        return self._input_quantizer


class QuantMixin(QuantInputMixin):
    """A module with an input quantizer and a weight quantizer."""

    default_quant_desc_weight = QUANT_DESC_8BIT_PER_TENSOR

    @classmethod
    def set_default_quant_desc_weight(cls, value):
        _check_desc(value, "quant_desc_weight")
        cls.default_quant_desc_weight = copy.deepcopy(value)

    def init_quantizer(self, quant_desc_input, quant_desc_weight, num_layers=None):
        if not (quant_desc_input.fake_quant and quant_desc_weight.fake_quant):
            raise ValueError("Only fake quantization is supported!")
        self._fake_quant = True
        self._input_quantizer = TensorQuantizer(quant_desc_input)
        self._weight_quantizer = TensorQuantizer(quant_desc_weight)

    @property
    def weight_quantizer(self):
        return self._weight_quantizer


def pop_quant_desc_in_kwargs(quant_cls, input_only=False, **kwargs):
    """(quant_desc_input[, quant_desc_weight]) from kwargs or the class defaults; leftovers are an error."""
    quant_desc_input = kwargs.pop("quant_desc_input", quant_cls.default_quant_desc_input)
    _check_desc(quant_desc_input, "quant_desc_input")
    if not input_only:
        quant_desc_weight = kwargs.pop("quant_desc_weight", quant_cls.default_quant_desc_weight)
        _check_desc(quant_desc_weight, "quant_desc_weight")
    if kwargs:
        raise TypeError(f"Unused keys: {kwargs.keys()}")
    return quant_desc_input if input_only else (quant_desc_input, quant_desc_weight)


def check_weight_axis(module, desc, weight_dim):
    """A weight descriptor's axes must exist on the layer's weight."""
    if desc.axis is None:
        return
    for a in desc.axis:
        if not -weight_dim <= a < weight_dim:
            raise ValueError(f"{module.__class__.__name__}: quant_desc_weight axis {a} is out of range for a weight "
                             f"with {weight_dim} dimensions")
