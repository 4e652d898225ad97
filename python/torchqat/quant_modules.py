"""Automatic replacement by monkey-patching torch.nn, as pytorch-quantization does.

    from torchqat import quant_modules
    quant_modules.initialize()      # torch.nn.Conv2d is now QuantConv2d, ...
    model = torchvision.models.resnet50()
    quant_modules.deactivate()      # torch.nn is restored exactly

The patch is global (every nn.Conv2d(...) made while it is active, in any library, is
quantized); torchqat.quantize_model(model, config) is the non-global alternative.

Like pytorch-quantization's map, the default map has no MaxPool (YOLO QAT recipes leave MaxPool
float and share the scales around it instead) and no InstanceNorm; it has LSTM and LSTMCell.
"""
import inspect
from collections import namedtuple

import torch
from torch import nn

from .nn.modules import quant_conv, quant_linear, quant_pooling, quant_rnn

# enable_onnx_export is reachable here too (see __getattr__ below), as in pytorch-quantization.
__all__ = ["initialize", "deactivate", "QuantModuleReplacementHelper"]

_quant_entry = namedtuple("quant_entry", "orig_mod mod_name replace_mod")

_DEFAULT_QUANT_MAP = [
    _quant_entry(torch.nn, "Conv1d", quant_conv.QuantConv1d),
    _quant_entry(torch.nn, "Conv2d", quant_conv.QuantConv2d),
    _quant_entry(torch.nn, "Conv3d", quant_conv.QuantConv3d),
    _quant_entry(torch.nn, "ConvTranspose1d", quant_conv.QuantConvTranspose1d),
    _quant_entry(torch.nn, "ConvTranspose2d", quant_conv.QuantConvTranspose2d),
    _quant_entry(torch.nn, "ConvTranspose3d", quant_conv.QuantConvTranspose3d),
    _quant_entry(torch.nn, "Linear", quant_linear.QuantLinear),
    _quant_entry(torch.nn, "LSTM", quant_rnn.QuantLSTM),
    _quant_entry(torch.nn, "LSTMCell", quant_rnn.QuantLSTMCell),
    _quant_entry(torch.nn, "AvgPool1d", quant_pooling.QuantAvgPool1d),
    _quant_entry(torch.nn, "AvgPool2d", quant_pooling.QuantAvgPool2d),
    _quant_entry(torch.nn, "AvgPool3d", quant_pooling.QuantAvgPool3d),
    _quant_entry(torch.nn, "AdaptiveAvgPool1d", quant_pooling.QuantAdaptiveAvgPool1d),
    _quant_entry(torch.nn, "AdaptiveAvgPool2d", quant_pooling.QuantAdaptiveAvgPool2d),
    _quant_entry(torch.nn, "AdaptiveAvgPool3d", quant_pooling.QuantAdaptiveAvgPool3d),
]


def _check_custom_entry(item):
    """A custom map entry is (namespace, "Name", QuantClass), naming an existing nn.Module class."""
    if not isinstance(item, (tuple, list)) or len(item) != 3:
        raise ValueError(f"custom_quant_modules entries must be (module, 'Name', QuantClass) tuples, got {item!r}")
    orig_mod, name, replace = item
    if not isinstance(name, str) or not name:
        raise ValueError(f"custom_quant_modules entry {item!r}: the name must be a non-empty string, got {name!r}")
    if not hasattr(orig_mod, name):
        where = getattr(orig_mod, "__name__", repr(orig_mod))
        raise ValueError(f"custom_quant_modules entry {item!r}: unknown module type {name!r}, "
                         f"{where} has no attribute {name!r}")
    orig = getattr(orig_mod, name)
    if not (inspect.isclass(orig) and issubclass(orig, nn.Module)):
        raise ValueError(f"custom_quant_modules entry {item!r}: {name!r} is not an nn.Module class "
                         f"(it is {type(orig).__name__})")
    if not (inspect.isclass(replace) and issubclass(replace, nn.Module)):
        raise ValueError(f"custom_quant_modules entry {item!r}: the replacement must be an nn.Module class, "
                         f"got {replace!r}")
    return _quant_entry(orig_mod, name, replace)


class QuantModuleReplacementHelper:
    """pytorch-quantization's helper: which torch.nn attributes to patch and what they were.

    `orginal_func_map` (sic, the upstream name) holds the entries to restore, `quant_map` the
    patches. Unlike upstream, a second initialize() without deactivate() restores first, so
    torch.nn can always be put back exactly.
    """

    def __init__(self):
        self.orginal_func_map = set()
        self.default_quant_map = _DEFAULT_QUANT_MAP
        self.quant_map = set()
        self.active = False

    def prepare_state(self, float_module_list=None, custom_map=None):
        """Builds quant_map: the default entries not denied by float_module_list, plus custom_map's (module, name, class) tuples."""
        if float_module_list is not None:
            if isinstance(float_module_list, str) or not all(isinstance(n, str) for n in float_module_list):
                raise TypeError("float_module_list must be a list of module names like ['Linear'], "
                                f"got {float_module_list!r}")
        # Validate everything before touching state, so a bad entry leaves torch.nn as it was.
        custom = [_check_custom_entry(item) for item in (custom_map or [])]
        quant_map = {}
        for item in self.default_quant_map:
            if float_module_list is not None and item.mod_name in float_module_list:
                continue
            quant_map[(id(item.orig_mod), item.mod_name)] = item
        for item in custom:  # a custom entry wins over the deny list and the default
            quant_map[(id(item.orig_mod), item.mod_name)] = item
        self.quant_map = set(quant_map.values())
        self.orginal_func_map = {_quant_entry(e.orig_mod, e.mod_name, getattr(e.orig_mod, e.mod_name))
                                 for e in self.quant_map}

    def apply_quant_modules(self):
        """Replaces the torch.nn classes of quant_map by their quantized versions (a global patch)."""
        for entry in self.quant_map:
            setattr(entry.orig_mod, entry.mod_name, entry.replace_mod)
        self.active = True

    def restore_float_modules(self):
        """Undoes apply_quant_modules."""
        for entry in self.orginal_func_map:
            setattr(entry.orig_mod, entry.mod_name, entry.replace_mod)
        self.orginal_func_map = set()
        self.quant_map = set()
        self.active = False


_quant_module_helper_object = QuantModuleReplacementHelper()


def initialize(float_module_list=None, custom_quant_modules=None):
    """Patches torch.nn so new layers are quantized.

    float_module_list: names to keep float, e.g. ["Linear"].
    custom_quant_modules: extra (namespace, "Name", QuantClass) entries, e.g.
        [(torch.nn, "MaxPool2d", quant_nn.QuantMaxPool2d)]. An entry naming a class the
        namespace does not have is a ValueError.
    """
    if _quant_module_helper_object.active:
        _quant_module_helper_object.restore_float_modules()
    _quant_module_helper_object.prepare_state(float_module_list, custom_quant_modules)
    _quant_module_helper_object.apply_quant_modules()


def deactivate():
    """Restores every torch.nn attribute initialize() replaced (a no-op when not active)."""
    _quant_module_helper_object.restore_float_modules()


def __getattr__(name):
    # pytorch-quantization exports enable_onnx_export from here; torchqat's lives with the exporter.
    if name == "enable_onnx_export":
        try:
            from . import onnx as _onnx
            return _onnx.enable_onnx_export
        except (ImportError, AttributeError) as e:
            raise AttributeError(f"torchqat.quant_modules.enable_onnx_export needs torchqat.onnx ({e})") from e
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
