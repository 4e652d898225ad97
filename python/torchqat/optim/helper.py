"""Helpers for quantization-aware optimizers, with pytorch-quantization's names and errors.

Patterns are regular expressions searched (re.search) in parameter names.
"""
import logging
import re

import torch

__all__ = ["match_parameters", "group_parameters", "freeze_parameters", "quant_weight_inplace"]

logger = logging.getLogger("torchqat")


def match_parameters(model, patterns):
    """Yields each parameter of `model` once per pattern its name matches."""
    for name, param in model.named_parameters():
        for pattern in patterns:
            if re.search(pattern, name):
                yield param


def _set_option(groups, key, values, patterns_list):
    if values is None:
        return
    if len(values) != len(patterns_list):
        raise TypeError(f"len({key}s) must match len(patterns_list)")
    for group, value in zip(groups, values):
        group[key] = value


def group_parameters(model, patterns_list, lrs=None, momentums=None, weight_decays=None):
    """Optimizer parameter groups, one per list of patterns, with optional per-group lr / momentum / weight_decay.

    The patterns of different groups must not overlap (not checked, as in pytorch-quantization).
    """
    groups = []
    for patterns in patterns_list:
        if not isinstance(patterns, list):
            raise TypeError("patterns_list must be list of list of patterns")
        groups.append({"params": match_parameters(model, patterns)})
    _set_option(groups, "lr", lrs, patterns_list)
    _set_option(groups, "momentum", momentums, patterns_list)
    _set_option(groups, "weight_decay", weight_decays, patterns_list)
    return groups


def freeze_parameters(model, patterns):
    """Sets requires_grad=False on every parameter whose name matches one of the patterns."""
    for name, param in model.named_parameters():
        for pattern in patterns:
            if re.search(pattern, name):
                logger.warning("Freeze %s.", name)
                param.requires_grad = False


def quant_weight_inplace(model):
    """Replaces the weight of every module with a weight quantizer by its quantized value (relax-and-round)."""
    for name, module in model.named_modules():
        quantizer = getattr(module, "_weight_quantizer", None)
        if quantizer is None:
            continue
        if not quantizer.fake_quant:
            logger.warning("In-place real quantization is VERY dangerous and should be used for inference only. "
                           "Make sure that is the desired behavior.")
        logger.warning("In-place quantize weight of %s", name)
        with torch.no_grad():
            module.weight.copy_(quantizer(module.weight))
