"""BatchNorm folding: conv(x) -> bn  ==>  conv'(x), with the BN's running statistics in the conv.

    w' = w * s,  b' = (b - running_mean) * s + beta,  s = gamma / sqrt(running_var + eps)

(s along the conv's output channels: axis 0 of a Conv weight, axis 1 of a ConvTranspose weight,
per group). The new weight and bias are computed in float64 and rounded once to the parameter
dtype, so they are exact to that rounding. Folding uses eval-mode BN semantics (running stats),
as TensorRT does and as NVIDIA's YOLOv7 QAT recipe does before inserting quantizers.

Pairs are found on the model's graph (a conv whose only reader is a BN): a recorded run when
example inputs are given (torchqat.capture.record: any model that runs), else a torch.fx trace;
and between adjacent entries of nn.Sequential containers (also inside modules fx could not trace). The BN is replaced
by nn.Identity in its parent, so the model's own forward code keeps working. Conv and Linear
(with BatchNorm1d) are folded; QuantConv/QuantLinear too, before or after quantizer insertion:
a calibrated per-channel weight amax is rescaled by |s| (the quantized integers do not change);
a per-tensor weight amax cannot be and is reported stale (recalibrate it).
"""
import warnings

import torch
from torch import nn

from . import _C, placement
from .nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["fold_bn", "find_conv_bn_pairs", "fold_conv_bn"]

_BN = nn.modules.batchnorm._BatchNorm
_FOLDABLE = (nn.modules.conv._ConvNd, nn.Linear)


def _sequential_pairs(model):
    pairs = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Sequential):
            continue
        items = list(m._modules.items())
        for (a, ma), (b, mb) in zip(items, items[1:]):
            if isinstance(ma, _FOLDABLE) and isinstance(mb, _BN):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a, prefix + b))
    return pairs


def _graph_pairs(model, leaf_modules, example_inputs):
    graph, _ = placement.capture_graph(model, example_inputs, leaf_modules)
    modules = dict(model.named_modules(remove_duplicate=False))
    calls = {name: graph.call_counts.get(id(m), 0) for name, m in modules.items()}
    pairs = []
    for n in graph.nodes:
        if n.op != "call_module" or not isinstance(modules[n.target], _BN) or not n.args:
            continue
        p = n.args[0]
        if not (hasattr(p, "op") and p.op == "call_module" and isinstance(modules[p.target], _FOLDABLE)):
            continue
        if len(p.users) != 1 or calls[p.target] != 1 or calls[n.target] != 1:
            continue  # the conv output is read elsewhere, or a module is called twice
        pairs.append((p.target, n.target))
    return pairs


def find_conv_bn_pairs(model, leaf_modules=(), example_inputs=None):
    """[(conv name, bn name)] that fold_bn would fold."""
    try:
        pairs = _graph_pairs(model, leaf_modules, example_inputs)
    except RuntimeError as e:
        warnings.warn(f"fold_bn: {e}; folding only conv+BN pairs inside nn.Sequential", stacklevel=3)
        pairs = []
    seen = {c for c, _ in pairs} | {b for _, b in pairs}
    for c, b in _sequential_pairs(model):
        if c not in seen and b not in seen:
            pairs.append((c, b))
    return pairs


def _out_axis(conv):
    return 1 if isinstance(conv, nn.modules.conv._ConvTransposeNd) else 0


def fold_conv_bn(conv, bn):
    """Folds bn's eval-mode affine transform into conv (in place; parameter objects are kept)."""
    if not isinstance(conv, _FOLDABLE):
        raise TypeError(f"fold_conv_bn: expected a conv or linear layer, got {type(conv).__name__}")
    if not isinstance(bn, _BN):
        raise TypeError(f"fold_conv_bn: expected a BatchNorm layer, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_conv_bn: the BatchNorm has no running statistics (track_running_stats=False)")
    out_ch = conv.out_features if isinstance(conv, nn.Linear) else conv.out_channels
    if bn.num_features != out_ch:
        raise ValueError(f"fold_conv_bn: BatchNorm has {bn.num_features} features, the layer {out_ch} outputs")
    w = conv.weight.detach()
    # The arithmetic is the C++ core's (torchqat::fold_bn_parameters), shared with C++ fold_bn.
    w_new, b_new, s = _C.fold_bn_parameters(
        w, conv.bias.detach() if conv.bias is not None else None, bn.running_mean.detach(), bn.running_var.detach(),
        bn.weight.detach() if bn.weight is not None else None, bn.bias.detach() if bn.bias is not None else None,
        float(bn.eps), _out_axis(conv) == 1, conv.groups if _out_axis(conv) == 1 else 1)
    with torch.no_grad():
        conv.weight.copy_(w_new)
        if conv.bias is None:
            conv.bias = nn.Parameter(b_new)
        else:
            conv.bias.copy_(b_new)
    _rescale_weight_amax(conv, s)


def _rescale_weight_amax(conv, s):
    q = getattr(conv, "_weight_quantizer", None)
    if not isinstance(q, TensorQuantizer) or q.amax is None:
        return
    amax = q.amax
    axis = _out_axis(conv)
    per_out_channel = (q.axis is not None and len(q.axis) == 1 and q.axis[0] % conv.weight.dim() == axis
                       and amax.numel() == s.numel() and (axis == 0 or conv.groups == 1))
    if per_out_channel:
        q.amax = (amax.detach().double().cpu() * s.abs().cpu().reshape(amax.shape)).float()
    else:
        warnings.warn("fold_bn: the weight quantizer's amax is not per output channel, so it cannot be rescaled; "
                      "it is stale now: recalibrate the weights", stacklevel=4)


def fold_bn(model, leaf_modules=(), example_inputs=None):
    """Folds every Conv/Linear + BatchNorm pair of `model` in place (BN -> nn.Identity); returns the model.

    example_inputs: a tensor or tuple of arguments: pairs are found on a recorded run of the model
      (any model that runs); without, on a torch.fx trace.
    leaf_modules: passed to the fx trace (module names or classes not to trace into).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_bn: model must be an nn.Module, got {type(model).__name__}")
    pairs = find_conv_bn_pairs(model, leaf_modules, example_inputs)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        try:
            fold_conv_bn(conv, bn)
        except ValueError as e:
            warnings.warn(f"fold_bn: {conv_name} + {bn_name} left as they are: {e}", stacklevel=2)
            continue
        parent_name, _, attr = bn_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[attr] = nn.Identity()
    return model
