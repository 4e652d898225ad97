"""Quantized convolutions: F.convNd(input_quantizer(x), weight_quantizer(weight))."""
from torch import nn
from torch.nn import functional as F

from ... import tensor_quant
from . import _utils

__all__ = ["QuantConv1d", "QuantConv2d", "QuantConv3d", "QuantConvTranspose1d", "QuantConvTranspose2d",
           "QuantConvTranspose3d", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d"]


class _QuantConvMixin(_utils.QuantMixin):
    def _init_quant(self, kwargs):
        desc_in, desc_w = _utils.pop_quant_desc_in_kwargs(self.__class__, **kwargs)
        _utils.check_weight_axis(self, desc_w, self.weight.dim())
        self.init_quantizer(desc_in, desc_w)

    def _quant(self, x):
        return self._input_quantizer(x), self._weight_quantizer(self.weight)

    @classmethod
    def from_float(cls, module, quant_desc_input=None, quant_desc_weight=None):
        """A quantized copy of a float module (weights and bias copied)."""
        kw = {}
        if quant_desc_input is not None:
            kw["quant_desc_input"] = quant_desc_input
        if quant_desc_weight is not None:
            kw["quant_desc_weight"] = quant_desc_weight
        args = dict(in_channels=module.in_channels, out_channels=module.out_channels, kernel_size=module.kernel_size,
                    stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups,
                    bias=module.bias is not None, padding_mode=module.padding_mode)
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            args["output_padding"] = module.output_padding
        q = cls(**args, **kw).to(device=module.weight.device, dtype=module.weight.dtype)
        q.weight.data.copy_(module.weight.data)
        if module.bias is not None:
            q.bias.data.copy_(module.bias.data)
        return q


def _make_conv(name, base, fn, weight_desc):
    class QuantConv(base, _QuantConvMixin):
        default_quant_desc_weight = weight_desc

        def __init__(self, *args, **kwargs):
            quant_kwargs = {k: kwargs.pop(k) for k in ("quant_desc_input", "quant_desc_weight") if k in kwargs}
            super().__init__(*args, **kwargs)
            self._init_quant(quant_kwargs)

        def forward(self, input):
            x, w = self._quant(input)
            if self.padding_mode != "zeros":
                x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                return fn(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
            return fn(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    QuantConv.__name__ = QuantConv.__qualname__ = name
    return QuantConv


def _make_conv_transpose(name, base, fn, weight_desc, nd):
    class QuantConvTranspose(base, _QuantConvMixin):
        default_quant_desc_weight = weight_desc

        def __init__(self, *args, **kwargs):
            quant_kwargs = {k: kwargs.pop(k) for k in ("quant_desc_input", "quant_desc_weight") if k in kwargs}
            super().__init__(*args, **kwargs)
            if self.padding_mode != "zeros":
                raise ValueError(f"Only 'zeros' padding mode is supported for {name}")
            self._init_quant(quant_kwargs)

        def forward(self, input, output_size=None):
            output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                                  nd, self.dilation)
            x, w = self._quant(input)
            return fn(x, w, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation)

    QuantConvTranspose.__name__ = QuantConvTranspose.__qualname__ = name
    return QuantConvTranspose


QuantConv1d = _make_conv("QuantConv1d", nn.Conv1d, F.conv1d, tensor_quant.QUANT_DESC_8BIT_CONV1D_WEIGHT_PER_CHANNEL)
QuantConv2d = _make_conv("QuantConv2d", nn.Conv2d, F.conv2d, tensor_quant.QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL)
QuantConv3d = _make_conv("QuantConv3d", nn.Conv3d, F.conv3d, tensor_quant.QUANT_DESC_8BIT_CONV3D_WEIGHT_PER_CHANNEL)
QuantConvTranspose1d = _make_conv_transpose("QuantConvTranspose1d", nn.ConvTranspose1d, F.conv_transpose1d,
                                            tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE1D_WEIGHT_PER_CHANNEL, 1)
QuantConvTranspose2d = _make_conv_transpose("QuantConvTranspose2d", nn.ConvTranspose2d, F.conv_transpose2d,
                                            tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL, 2)
QuantConvTranspose3d = _make_conv_transpose("QuantConvTranspose3d", nn.ConvTranspose3d, F.conv_transpose3d,
                                            tensor_quant.QUANT_DESC_8BIT_CONVTRANSPOSE3D_WEIGHT_PER_CHANNEL, 3)

Conv1d, Conv2d, Conv3d = QuantConv1d, QuantConv2d, QuantConv3d
ConvTranspose1d, ConvTranspose2d, ConvTranspose3d = QuantConvTranspose1d, QuantConvTranspose2d, QuantConvTranspose3d
