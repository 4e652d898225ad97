"""Quantized Linear: F.linear(input_quantizer(x), weight_quantizer(weight), bias)."""
from torch import nn
from torch.nn import functional as F

from ... import tensor_quant
from . import _utils

__all__ = ["QuantLinear", "Linear"]


class QuantLinear(nn.Linear, _utils.QuantMixin):
    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW

    def __init__(self, in_features, out_features, bias=True, **kwargs):
        quant_kwargs = {k: kwargs.pop(k) for k in ("quant_desc_input", "quant_desc_weight") if k in kwargs}
        super().__init__(in_features, out_features, bias, **kwargs)
        desc_in, desc_w = _utils.pop_quant_desc_in_kwargs(self.__class__, **quant_kwargs)
        _utils.check_weight_axis(self, desc_w, 2)
        self.init_quantizer(desc_in, desc_w)

    def forward(self, input):
        return F.linear(self._input_quantizer(input), self._weight_quantizer(self.weight), self.bias)

    @classmethod
    def from_float(cls, module, quant_desc_input=None, quant_desc_weight=None):
        kw = {k: v for k, v in (("quant_desc_input", quant_desc_input), ("quant_desc_weight", quant_desc_weight))
              if v is not None}
        q = cls(module.in_features, module.out_features, module.bias is not None, **kw)
        q = q.to(device=module.weight.device, dtype=module.weight.dtype)
        q.weight.data.copy_(module.weight.data)
        if module.bias is not None:
            q.bias.data.copy_(module.bias.data)
        return q


Linear = QuantLinear
