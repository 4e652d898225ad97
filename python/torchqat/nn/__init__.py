"""Quantized modules and the TensorQuantizer, with pytorch-quantization's names.

Every Quant* class also has its short alias (quant_nn.Conv2d is quant_nn.QuantConv2d).
"""
from .modules import *  # noqa: F401,F403
from .modules import TensorQuantizer, QuantMixin, QuantInputMixin  # noqa: F401
from .modules import _utils  # noqa: F401
from . import functional  # noqa: F401
