"""Quantized pooling: the float pooling applied to input_quantizer(x)."""
import copy

from torch import nn

from . import _utils

__all__ = []


def _make_pool(name, base):
    class QuantPool(base, _utils.QuantInputMixin):
        def __init__(self, *args, **kwargs):
            quant_kwargs = {k: kwargs.pop(k) for k in ("quant_desc_input",) if k in kwargs}
            super().__init__(*args, **kwargs)
            self.init_quantizer(_utils.pop_quant_desc_in_kwargs(self.__class__, input_only=True, **quant_kwargs))

        def forward(self, input):
            return super().forward(self._input_quantizer(input))

        @classmethod
        def from_float(cls, module, quant_desc_input=None):
            q = copy.copy(module)  # same pooling arguments
            q.__class__ = cls
            q._modules = dict(module._modules)
            desc = quant_desc_input if quant_desc_input is not None else cls.default_quant_desc_input
            q.init_quantizer(desc)
            return q

    QuantPool.__name__ = QuantPool.__qualname__ = name
    return QuantPool


for _base in ("MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
              "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"):
    _cls = _make_pool("Quant" + _base, getattr(nn, _base))
    globals()["Quant" + _base] = _cls
    globals()[_base] = _cls
    __all__ += ["Quant" + _base, _base]
