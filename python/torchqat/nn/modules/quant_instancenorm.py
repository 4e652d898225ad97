"""Quantized InstanceNorm: the float InstanceNorm applied to input_quantizer(x).

Input quantizer only (a QuantInputMixin, as in pytorch-quantization). Not in the default
replacement map (neither pytorch-quantization's nor torchqat.quantize_model's): name it in
custom_quant_modules to quantize it.
"""
from torch import nn

from . import _utils

__all__ = []


def _make_norm(name, base, nd):
    class QuantInstanceNorm(base, _utils.QuantInputMixin):
        _float_module = base

        def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                     device=None, dtype=None, **kwargs):
            super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
            desc_in = _utils.pop_quant_desc_in_kwargs(self.__class__, input_only=True, **kwargs)
            _utils.check_input_axis(self, desc_in, nd + 2)
            self.init_quantizer(desc_in)

        def forward(self, input):
            """Instance normalisation of the quantized input."""
            return super().forward(self._input_quantizer(input))

        @classmethod
        def from_float(cls, module, quant_desc_input=None):
            """A quantized copy of a float InstanceNorm: affine parameters and running stats copied."""
            if not isinstance(module, base):
                raise TypeError(f"{cls.__name__}.from_float expects a torch.nn.{base.__name__}, "
                                f"got {type(module).__name__}")
            ref = next(iter(list(module.parameters()) + list(module.buffers())), None)
            q = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                    **({} if ref is None else {"device": ref.device, "dtype": ref.dtype}),
                    **_utils.quant_desc_kwargs(quant_desc_input))
            for pname, p in module.named_parameters(recurse=False):
                setattr(q, pname, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
            for bname, b in module.named_buffers(recurse=False):
                if b is not None:
                    getattr(q, bname).copy_(b)
            if ref is not None:
                q._input_quantizer.to(ref.device)
            q.train(module.training)
            return q

    QuantInstanceNorm.__name__ = QuantInstanceNorm.__qualname__ = name
    QuantInstanceNorm.__module__ = __name__
    QuantInstanceNorm.__doc__ = (f"nn.{base.__name__} with a per-tensor input quantizer "
                                 "(extra kwarg quant_desc_input).")
    return QuantInstanceNorm


for _nd in (1, 2, 3):
    _base = getattr(nn, f"InstanceNorm{_nd}d")
    _cls = _make_norm(f"QuantInstanceNorm{_nd}d", _base, _nd)
    globals()[_cls.__name__] = _cls
    globals()[_base.__name__] = _cls
    __all__ += [_cls.__name__, _base.__name__]
del _nd, _base, _cls
