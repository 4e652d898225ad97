"""Which tensor each weight quantizer of a module quantizes.

A module names its weight -> quantizer pairs with a `_quant_weights()` method returning
[(quantizer attribute path, the tensor that quantizer sees, the quantizer, channel axis)]; an
LSTM has one pair per layer x direction (the fused cat([W_ih, W_hh], 1)). Modules without the
method are the one-weight kind: `weight` with `_weight_quantizer` (channel axis 1 for
ConvTranspose, whose weight is [Cin, Cout, ...], else 0). Weight calibration and checkpoint
checks read the pairs from here, so a new module plugs in by defining `_quant_weights`.
"""
import torch

from .tensor_quantizer import TensorQuantizer

__all__ = ["quant_weights"]


def quant_weights(module):
    """[(quantizer path, weight tensor, quantizer, channel axis)] of module's weight quantizers."""
    named = getattr(module, "_quant_weights", None)
    if callable(named):
        return named()
    q = getattr(module, "_weight_quantizer", None)
    w = getattr(module, "weight", None)
    if not isinstance(q, TensorQuantizer) or not torch.is_tensor(w):
        return []
    axis = 1 if isinstance(module, torch.nn.modules.conv._ConvTransposeNd) else 0
    return [("_weight_quantizer", w, q, axis)]
