"""quant_modules: _DEFAULT_QUANT_MAP entries, QuantModuleReplacementHelper's attributes and behaviour,
initialize/deactivate also at the top level (pytorch_quantization.initialize)."""
import pytest
import torch

import torchqat
from torchqat import nn as quant_nn
from torchqat import quant_modules

UPSTREAM = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear",
            "LSTM", "LSTMCell", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
            "AdaptiveAvgPool3d"]


@pytest.fixture(autouse=True)
def _restore():
    yield
    quant_modules.deactivate()


def test_default_map_entries_are_quant_entry_namedtuples():
    entries = quant_modules._DEFAULT_QUANT_MAP
    assert all(type(e).__name__ == "quant_entry" and type(e)._fields == ("orig_mod", "mod_name", "replace_mod")
               for e in entries)
    names = [e.mod_name for e in entries]
    # Upstream's order; the RNN entries are present exactly when torchqat has the RNN classes.
    assert names == [n for n in UPSTREAM if n in names]
    assert set(UPSTREAM) - set(names) <= {"LSTM", "LSTMCell"}
    assert "MaxPool2d" not in names and "InstanceNorm2d" not in names
    for e in entries:
        assert e.orig_mod is torch.nn and e.replace_mod is getattr(quant_nn, "Quant" + e.mod_name)


def test_replace_mod_by_type_id_as_the_yolov7_recipe_does():
    by_id = {id(getattr(e.orig_mod, e.mod_name)): e.replace_mod for e in quant_modules._DEFAULT_QUANT_MAP}
    assert by_id[id(type(torch.nn.Conv2d(1, 1, 1)))] is quant_nn.QuantConv2d
    assert id(torch.nn.MaxPool2d) not in by_id


def test_helper_attributes_and_state():
    h = quant_modules.QuantModuleReplacementHelper()
    assert h.orginal_func_map == set() and h.quant_map == set()
    assert h.default_quant_map is quant_modules._DEFAULT_QUANT_MAP
    float_conv = torch.nn.Conv2d
    h.prepare_state(float_module_list=["Linear"], custom_map=[(torch.nn, "MaxPool2d", quant_nn.QuantMaxPool2d)])
    patched = {e.mod_name: e.replace_mod for e in h.quant_map}
    assert "Linear" not in patched and patched["MaxPool2d"] is quant_nn.QuantMaxPool2d
    assert patched["Conv2d"] is quant_nn.QuantConv2d
    originals = {e.mod_name: e.replace_mod for e in h.orginal_func_map}
    assert originals["Conv2d"] is float_conv and originals.keys() == patched.keys()
    h.apply_quant_modules()
    try:
        assert torch.nn.Conv2d is quant_nn.QuantConv2d and torch.nn.MaxPool2d is quant_nn.QuantMaxPool2d
    finally:
        h.restore_float_modules()
    assert torch.nn.Conv2d is float_conv and torch.nn.MaxPool2d is not quant_nn.QuantMaxPool2d


def test_custom_entry_overrides_the_deny_list():
    h = quant_modules.QuantModuleReplacementHelper()
    h.prepare_state(["Conv2d"], [(torch.nn, "Conv2d", quant_nn.QuantConv2d)])
    assert {e.mod_name for e in h.quant_map} >= {"Conv2d"}


def test_top_level_initialize_and_deactivate():
    float_linear = torch.nn.Linear
    torchqat.initialize()
    assert torch.nn.Linear is quant_nn.QuantLinear
    torchqat.deactivate()
    assert torch.nn.Linear is float_linear
    assert torchqat.enable_onnx_export is quant_modules.enable_onnx_export
