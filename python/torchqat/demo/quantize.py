"""Turning the float network into a quantized one with torchqat's modules.

Conv2d/Linear/pooling become torchqat.nn Quant* modules (per-channel weight quantizers, per-tensor
input quantizers) and each residual `Add` becomes torchqat.nn.QuantAdd, whose two summands share
one quantizer. All quantization behaviour comes from the library; this file only chooses
descriptors.
"""
import copy

from .. import nn as quant_nn
from ..tensor_quant import E4M3, QuantDescriptor
from .model import Add

__all__ = ["quantize", "E4M3"]


def quantize(float_model, weight_bits=8, act_bits=8):
    """A quantized deep copy of float_model: weight_bits per-channel weights, act_bits per-tensor inputs
    (bits: an int, or E4M3 = (4, 3) for FP8 E4M3)."""
    model = copy.deepcopy(float_model)
    desc_in = QuantDescriptor(num_bits=act_bits)
    desc_w = QuantDescriptor(num_bits=weight_bits, axis=(0,))
    _replace(model, desc_in, desc_w)
    return model


def _replace(module, desc_in, desc_w):
    import torch.nn as tnn
    for name, child in list(module.named_children()):
        if type(child) is tnn.Conv2d:
            new = quant_nn.QuantConv2d.from_float(child, quant_desc_input=desc_in, quant_desc_weight=desc_w)
        elif type(child) is tnn.Linear:
            new = quant_nn.QuantLinear.from_float(child, quant_desc_input=desc_in, quant_desc_weight=desc_w)
        elif type(child) is tnn.MaxPool2d:
            new = quant_nn.QuantMaxPool2d.from_float(child, quant_desc_input=desc_in)
        elif type(child) is tnn.AdaptiveAvgPool2d:
            new = quant_nn.QuantAdaptiveAvgPool2d.from_float(child, quant_desc_input=desc_in)
        elif type(child) is Add:
            new = quant_nn.QuantAdd(quant_desc_input=desc_in)
        else:
            _replace(child, desc_in, desc_w)
            continue
        setattr(module, name, new)
