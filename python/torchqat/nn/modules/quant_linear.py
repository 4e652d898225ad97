"""Quantized Linear: F.linear(input_quantizer(x), weight_quantizer(weight), bias).

The weight quantizer is per output row (axis 0, amax [out, 1]).
"""
from torch import nn
from torch.nn import functional as F

from ... import tensor_quant
from . import _utils

__all__ = ["QuantLinear", "Linear"]


class QuantLinear(nn.Linear, _utils.QuantMixin):
    """nn.Linear with a per-tensor input quantizer and a per-row weight quantizer."""

    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW
    _float_module = nn.Linear

    def __init__(self, in_features, out_features, bias=True, **kwargs):
        quant_kwargs = _utils.split_quant_kwargs(kwargs, base=nn.Linear)
        super().__init__(in_features, out_features, bias, **kwargs)
        desc_in, desc_w = _utils.pop_quant_desc_in_kwargs(self.__class__, **quant_kwargs)
        _utils.check_weight_axis(self, desc_w, 2)
        self.init_quantizer(desc_in, desc_w)

    def forward(self, input):
        return F.linear(self._input_quantizer(input), self._weight_quantizer(self.weight), self.bias)

    @classmethod
    def from_float(cls, module, quant_desc_input=None, quant_desc_weight=None):
        """A quantized copy of a float nn.Linear, weight and bias copied (not shared)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"{cls.__name__}.from_float expects a torch.nn.Linear, got {type(module).__name__}")
        q = cls(module.in_features, module.out_features, module.bias is not None,
                **_utils.quant_desc_kwargs(quant_desc_input, quant_desc_weight), device="meta")
        q.weight = nn.Parameter(module.weight.detach().clone(), requires_grad=module.weight.requires_grad)
        if module.bias is not None:
            q.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=module.bias.requires_grad)
        q._input_quantizer.to(module.weight.device)
        q._weight_quantizer.to(module.weight.device)
        q.train(module.training)
        return q


Linear = QuantLinear
