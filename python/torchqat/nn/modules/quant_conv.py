"""Quantized convolutions: F.convNd(input_quantizer(x), weight_quantizer(weight), bias, ...).

Weight quantizers are per output channel: axis 0 for Conv (amax [K,1,1,1]), axis 1 for
ConvTranspose (amax [1,Cout,1,1]), as pytorch-quantization 2.2.1 does.
"""
from torch import nn
from torch.nn import functional as F

from ... import tensor_quant
from . import _utils

__all__ = ["QuantConv1d", "QuantConv2d", "QuantConv3d", "QuantConvTranspose1d", "QuantConvTranspose2d",
           "QuantConvTranspose3d", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d"]


class _QuantConvMixin(_utils.QuantMixin):
    _nd = 2
    _float_module = nn.Conv2d

    def _init_quant(self, quant_kwargs):
        desc_in, desc_w = _utils.pop_quant_desc_in_kwargs(self.__class__, **quant_kwargs)
        _utils.check_input_axis(self, desc_in, self._nd + 2)
        _utils.check_weight_axis(self, desc_w, self._nd + 2)
        self.init_quantizer(desc_in, desc_w)

    def _quant(self, x):
        return self._input_quantizer(x), self._weight_quantizer(self.weight)

    @classmethod
    def from_float(cls, module, quant_desc_input=None, quant_desc_weight=None):
        """A quantized copy of a float conv: same arguments, weight and bias copied (not shared)."""
        base = cls._float_module
        if not isinstance(module, base):
            raise TypeError(f"{cls.__name__}.from_float expects a {base.__module__}.{base.__name__}, "
                            f"got {type(module).__name__}")
        args = _utils.float_ctor_args(module, base)
        args["bias"] = module.bias is not None
        # Built on the meta device: no random init, the parameters are replaced below.
        q = cls(**args, **_utils.quant_desc_kwargs(quant_desc_input, quant_desc_weight), device="meta")
        q.weight = nn.Parameter(module.weight.detach().clone(), requires_grad=module.weight.requires_grad)
        if module.bias is not None:
            q.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=module.bias.requires_grad)
        q._input_quantizer.to(module.weight.device)
        q._weight_quantizer.to(module.weight.device)
        q.train(module.training)
        return q


def _make_conv(name, base, nd, weight_desc):
    class QuantConv(base, _QuantConvMixin):
        default_quant_desc_weight = weight_desc
        _nd = nd
        _float_module = base

        def __init__(self, *args, **kwargs):
            quant_kwargs = _utils.split_quant_kwargs(kwargs, base=base)
            super().__init__(*args, **kwargs)
            self._init_quant(quant_kwargs)

        def forward(self, input):
            """The convolution of the quantized input and weight."""
            x, w = self._quant(input)
            # torch's own conv call (padding modes included) on the quantized tensors.
            return self._conv_forward(x, w, self.bias)

    QuantConv.__name__ = QuantConv.__qualname__ = name
    QuantConv.__doc__ = (f"{base.__name__} with a per-tensor input quantizer and a per-channel (axis 0) weight "
                         f"quantizer; extra kwargs quant_desc_input / quant_desc_weight.")
    return QuantConv


def _make_conv_transpose(name, base, fn, nd, weight_desc):
    class QuantConvTranspose(base, _QuantConvMixin):
        default_quant_desc_weight = weight_desc
        _nd = nd
        _float_module = base

        def __init__(self, *args, **kwargs):
            quant_kwargs = _utils.split_quant_kwargs(kwargs, base=base)
            super().__init__(*args, **kwargs)
            if self.padding_mode != "zeros":
                raise ValueError(f"Only 'zeros' padding mode is supported for {name}, got {self.padding_mode!r}")
            self._init_quant(quant_kwargs)

        def forward(self, input, output_size=None):
            """The transposed convolution of the quantized input and weight (output_size as torch's)."""
            output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                                  nd, self.dilation)
            x, w = self._quant(input)
            return fn(x, w, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation)

    QuantConvTranspose.__name__ = QuantConvTranspose.__qualname__ = name
    QuantConvTranspose.__doc__ = (f"{base.__name__} with a per-tensor input quantizer and a per-channel (axis 1) "
                                  f"weight quantizer; extra kwargs quant_desc_input / quant_desc_weight.")
    return QuantConvTranspose


QuantConv1d = _make_conv("QuantConv1d", nn.Conv1d, 1, tensor_quant.QUANT_DESC_8BIT_CONV1D_WEIGHT_PER_CHANNEL)
QuantConv2d = _make_conv("QuantConv2d", nn.Conv2d, 2, tensor_quant.QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL)
QuantConv3d = _make_conv("QuantConv3d", nn.Conv3d, 3, tensor_quant.QUANT_DESC_8BIT_CONV3D_WEIGHT_PER_CHANNEL)
QuantConvTranspose1d = _make_conv_transpose("QuantConvTranspose1d", nn.ConvTranspose1d, F.conv_transpose1d, 1,
                                            tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE1D_WEIGHT_PER_CHANNEL)
QuantConvTranspose2d = _make_conv_transpose("QuantConvTranspose2d", nn.ConvTranspose2d, F.conv_transpose2d, 2,
                                            tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL)
QuantConvTranspose3d = _make_conv_transpose("QuantConvTranspose3d", nn.ConvTranspose3d, F.conv_transpose3d, 3,
                                            tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE3D_WEIGHT_PER_CHANNEL)

for _cls in (QuantConv1d, QuantConv2d, QuantConv3d, QuantConvTranspose1d, QuantConvTranspose2d,
             QuantConvTranspose3d):
    _cls.__module__ = __name__
del _cls

Conv1d, Conv2d, Conv3d = QuantConv1d, QuantConv2d, QuantConv3d
ConvTranspose1d, ConvTranspose2d, ConvTranspose3d = QuantConvTranspose1d, QuantConvTranspose2d, QuantConvTranspose3d
