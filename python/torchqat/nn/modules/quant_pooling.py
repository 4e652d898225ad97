"""Quantized pooling: the float pooling applied to input_quantizer(x).

MaxPool commutes with quantization (TensorRT runs it in int8 between Q/DQ), so a quantized
MaxPool normally shares its input quantizer with its neighbours (see torchqat.placement).
"""
from torch import nn

from . import _utils

__all__ = []

_POOLS = {  # name: number of spatial dims
    "MaxPool1d": 1, "MaxPool2d": 2, "MaxPool3d": 3,
    "AvgPool1d": 1, "AvgPool2d": 2, "AvgPool3d": 3,
    "AdaptiveAvgPool1d": 1, "AdaptiveAvgPool2d": 2, "AdaptiveAvgPool3d": 3,
}


def _make_pool(name, base, nd):
    class QuantPool(base, _utils.QuantInputMixin):
        _float_module = base

        def __init__(self, *args, **kwargs):
            quant_kwargs = _utils.split_quant_kwargs(kwargs, ("quant_desc_input",), base=base)
            super().__init__(*args, **kwargs)
            desc_in = _utils.pop_quant_desc_in_kwargs(self.__class__, input_only=True, **quant_kwargs)
            _utils.check_input_axis(self, desc_in, nd + 2)
            self.init_quantizer(desc_in)

        def forward(self, input):
            """The pooling of the quantized input."""
            return super().forward(self._input_quantizer(input))

        @classmethod
        def from_float(cls, module, quant_desc_input=None):
            """A quantized pooling with the float module's arguments."""
            if not isinstance(module, base):
                raise TypeError(f"{cls.__name__}.from_float expects a torch.nn.{base.__name__}, "
                                f"got {type(module).__name__}")
            q = cls(**_utils.float_ctor_args(module, base), **_utils.quant_desc_kwargs(quant_desc_input))
            q.train(module.training)
            return q

    QuantPool.__name__ = QuantPool.__qualname__ = name
    QuantPool.__module__ = __name__
    QuantPool.__doc__ = f"nn.{base.__name__} with a per-tensor input quantizer (extra kwarg quant_desc_input)."
    return QuantPool


for _base, _nd in _POOLS.items():
    _cls = _make_pool("Quant" + _base, getattr(nn, _base), _nd)
    globals()["Quant" + _base] = _cls
    globals()[_base] = _cls
    __all__ += ["Quant" + _base, _base]
del _base, _nd, _cls
