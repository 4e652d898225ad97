"""Insertion: quant_modules.initialize/deactivate (global monkey patch) and quantize_model (in place)."""
import math
import warnings

import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat import quant_modules
from torchqat.tensor_quant import QuantDescriptor

import yolo_like


def _snapshot(ns):
    return {k: v for k, v in vars(ns).items()}


@pytest.fixture(autouse=True)
def _always_deactivate():
    yield
    quant_modules.deactivate()


def test_initialize_patches_and_deactivate_restores_exactly():
    before = _snapshot(torch.nn)
    quant_modules.initialize()
    assert torch.nn.Conv2d is quant_nn.QuantConv2d and torch.nn.Linear is quant_nn.QuantLinear
    assert torch.nn.AdaptiveAvgPool2d is quant_nn.QuantAdaptiveAvgPool2d
    assert torch.nn.MaxPool2d is before["MaxPool2d"]  # not in pytorch-quantization's default map
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    assert isinstance(m[0], quant_nn.QuantConv2d)
    quant_modules.deactivate()
    assert _snapshot(torch.nn) == before
    assert type(nn.Conv2d(3, 4, 3)) is before["Conv2d"]


def test_initialize_twice_then_deactivate_still_restores():
    before = _snapshot(torch.nn)
    quant_modules.initialize()
    quant_modules.initialize(float_module_list=["Linear"])
    assert torch.nn.Linear is before["Linear"] and torch.nn.Conv1d is quant_nn.QuantConv1d
    quant_modules.deactivate()
    quant_modules.deactivate()  # a second deactivate is a no-op
    assert _snapshot(torch.nn) == before


def test_custom_map_and_float_list():
    before = _snapshot(torch.nn)
    quant_modules.initialize(float_module_list=["Conv2d"],
                             custom_quant_modules=[(torch.nn, "MaxPool2d", quant_nn.QuantMaxPool2d)])
    assert torch.nn.Conv2d is before["Conv2d"]
    assert torch.nn.MaxPool2d is quant_nn.QuantMaxPool2d
    quant_modules.deactivate()
    assert _snapshot(torch.nn) == before


def test_unknown_module_in_custom_map_is_a_clear_error():
    before = _snapshot(torch.nn)
    with pytest.raises(ValueError, match="unknown module type 'Conv7d'"):
        quant_modules.initialize(custom_quant_modules=[(torch.nn, "Conv7d", quant_nn.QuantConv2d)])
    with pytest.raises(ValueError, match="must be an nn.Module class"):
        quant_modules.initialize(custom_quant_modules=[(torch.nn, "Conv2d", "QuantConv2d")])
    with pytest.raises(ValueError, match="not an nn.Module class"):
        quant_modules.initialize(custom_quant_modules=[(torch.nn, "functional", quant_nn.QuantConv2d)])
    assert _snapshot(torch.nn) == before  # a rejected map changes nothing


def test_default_quant_map_names_match_pytorch_quantization():
    names = [e.mod_name for e in quant_modules._DEFAULT_QUANT_MAP]
    assert names == ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear",
                     "LSTM", "LSTMCell", "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
                     "AdaptiveAvgPool3d"]
    assert all(e.orig_mod is torch.nn for e in quant_modules._DEFAULT_QUANT_MAP)


def test_pytorch_quantization_script_runs_with_changed_imports():
    # --- a pytorch-quantization script; only the imports were changed -------------------------
    from torchqat import nn as quant_nn, calib, quant_modules, tensor_quant  # noqa: F811
    from torchqat.tensor_quant import QuantDescriptor

    quant_desc_input = QuantDescriptor(calib_method="histogram")
    quant_nn.QuantConv2d.set_default_quant_desc_input(quant_desc_input)
    quant_nn.QuantLinear.set_default_quant_desc_input(quant_desc_input)
    try:
        quant_modules.initialize()
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        quant_modules.deactivate()
        data = [torch.randn(4, 3, 12, 12) for _ in range(3)]
        for _name, module in model.named_modules():
            if isinstance(module, quant_nn.TensorQuantizer):
                if module._calibrator is not None:
                    module.disable_quant()
                    module.enable_calib()
                else:
                    module.disable()
        with torch.no_grad():
            for x in data:
                model(x)
        for _name, module in model.named_modules():
            if isinstance(module, quant_nn.TensorQuantizer):
                if module._calibrator is not None:
                    module.enable_quant()
                    module.disable_calib()
                else:
                    module.enable()
        for _name, module in model.named_modules():
            if isinstance(module, quant_nn.TensorQuantizer):
                if isinstance(module._calibrator, calib.MaxCalibrator):
                    module.load_calib_amax()
                else:
                    module.load_calib_amax("percentile", percentile=99.99)
        # --- end of the script: check what it computed --------------------------------------
        conv, pool, fc = model[0], model[2], model[4]
        assert isinstance(conv, quant_nn.QuantConv2d) and isinstance(fc, quant_nn.QuantLinear)
        assert isinstance(pool, quant_nn.QuantAdaptiveAvgPool2d)
        # Weights: per-channel max calibration; the image input: the 99.99th percentile of |x| over
        # the three batches (the ceil(0.9999 n)-th smallest value), to within one histogram bin
        # (abs-max of the first batch / 2048): pytorch-quantization takes the edge of its bin.
        assert torch.equal(conv._weight_quantizer.amax, conv.weight.detach().abs().amax((1, 2, 3), keepdim=True))
        assert torch.equal(fc._weight_quantizer.amax, fc.weight.detach().abs().amax(1, keepdim=True))
        xs = torch.cat(data).abs().flatten()
        width = float(data[0].abs().max()) / 2048
        assert conv._input_quantizer.amax.shape == ()
        kth = float(xs.sort().values[math.ceil(0.9999 * xs.numel()) - 1])
        assert abs(float(conv._input_quantizer.amax) - kth) <= width
        # The forward: float ops on tensors fake-quantized by torch's own kernels with those amaxes.
        def fq(t, amax):
            # the step in float32, as torchqat computes it
            return torch.fake_quantize_per_tensor_affine(t, float(torch.as_tensor(amax).float() / 127), 0, -128, 127)

        def fq_rows(w, amax):
            scale = amax.reshape(-1) / 127
            return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32),
                                                          0, -128, 127)
        x = data[0]
        with torch.no_grad():
            out = model(x)
            h = torch.relu(nn.functional.conv2d(fq(x, conv._input_quantizer.amax),
                                                fq_rows(conv.weight, conv._weight_quantizer.amax), conv.bias))
            h = nn.functional.adaptive_avg_pool2d(fq(h, pool._input_quantizer.amax), 1).flatten(1)
            want = nn.functional.linear(fq(h, fc._input_quantizer.amax), fq_rows(fc.weight, fc._weight_quantizer.amax),
                                        fc.bias)
        # Same quantized operands (torchqat's fake quant equals torch's bit for bit, test_fake_quant.py):
        # only the float summation order of conv / linear differs, 1e-5 of the output's magnitude.
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        assert torch.equal(tensor_quant.fake_tensor_quant(x, x.abs().max()), fq(x, x.abs().max()))
    finally:
        quant_nn.QuantConv2d.default_quant_desc_input = tensor_quant.QUANT_DESC_8BIT_PER_TENSOR
        quant_nn.QuantLinear.default_quant_desc_input = tensor_quant.QUANT_DESC_8BIT_PER_TENSOR


# ----- quantize_model ----------------------------------------------------------------------------

def _small():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 1), nn.MaxPool2d(2)),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_quantize_model_replaces_in_place_and_is_not_global():
    model = _small()
    w = model[0].weight
    x = torch.randn(2, 3, 8, 8)
    ref = model(x)
    out = torchqat.quantize_model(model)
    assert out is model
    assert type(model[0]) is quant_nn.QuantConv2d and type(model[2][0]) is quant_nn.QuantConv2d
    assert type(model[2][1]) is nn.MaxPool2d and type(model[3]) is quant_nn.QuantAdaptiveAvgPool2d
    assert type(model[5]) is quant_nn.QuantLinear
    assert model[0].weight is w  # parameters are shared, an existing optimizer keeps working
    assert type(nn.Conv2d(1, 1, 1)) is not quant_nn.QuantConv2d  # torch.nn is untouched
    for m in model.modules():
        if isinstance(m, quant_nn.TensorQuantizer):
            m.disable()
    assert torch.equal(model(x), ref)


def test_quantize_model_include_exclude_and_descriptors():
    model = yolo_like.make_model()
    torchqat.quantize_model(model, {
        "quant_cfg": {
            "*_weight_quantizer": {"num_bits": 6},
            "backbone.stem.0.conv": {"enable": False},
            "sppcspc.*input_quantizer": QuantDescriptor(num_bits=8, calib_method="histogram"),
        },
        "exclude": ["detect"],
    })
    assert type(model.detect.m[0]) is nn.Conv2d  # excluded with its parent's name
    conv = model.backbone.elan2.cv1.conv
    assert type(conv) is quant_nn.QuantConv2d and conv._weight_quantizer.num_bits == 6
    assert conv._weight_quantizer.axis == (0,) and conv._input_quantizer.num_bits == 8
    first = model.backbone.stem[0].conv
    assert first._input_quantizer._disabled and first._weight_quantizer._disabled
    assert model.sppcspc.cv1.conv._input_quantizer._calib_method == "histogram"
    assert model.sppcspc.cv1.conv._weight_quantizer._calib_method == "max"

    model2 = yolo_like.make_model()
    torchqat.quantize_model(model2, include=["backbone.*"], exclude="backbone.mp*")
    assert type(model2.backbone.elan3.out.conv) is quant_nn.QuantConv2d
    assert type(model2.backbone.mp3.cv1.conv) is nn.Conv2d
    assert type(model2.sppcspc.cv1.conv) is nn.Conv2d


def test_pattern_matching_nothing_warns_naming_it():
    model = _small()
    with pytest.warns(UserWarning, match="exclude pattern 'head.*' matched no module"):
        torchqat.quantize_model(model, exclude=["head.*"])
    model = _small()
    with pytest.warns(UserWarning, match="quant_cfg pattern 'nothing.here' matched no quantizer"):
        torchqat.quantize_model(model, {"quant_cfg": {"nothing.here": {"enable": False}}})
    model = _small()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torchqat.quantize_model(model, {"quant_cfg": {"*input_quantizer": {"num_bits": 8}}, "exclude": ["0"]})


def test_quantize_model_bad_config_errors():
    with pytest.raises(ValueError, match="unknown config keys \\['quant_config'\\]"):
        torchqat.quantize_model(_small(), {"quant_config": {}})
    with pytest.raises(ValueError, match="quant_cfg\\['\\*'\\] is not a valid descriptor"):
        torchqat.quantize_model(_small(), {"quant_cfg": {"*": {"nbits": 4}}})
    with pytest.raises(ValueError, match="unknown module type 'MaxPool7d'"):
        torchqat.quantize_model(_small(), custom_quant_modules={"MaxPool7d": quant_nn.QuantMaxPool2d})
    with pytest.raises(ValueError, match="unknown module type"):
        torchqat.quantize_model(_small(), custom_quant_modules={42: quant_nn.QuantMaxPool2d})
    with pytest.raises(ValueError, match="'0'.*quant_desc_weight axis 5 is out of range"):
        torchqat.quantize_model(_small(), quant_desc_weight=QuantDescriptor(axis=5))


def test_quantize_model_custom_map_add_and_maxpool():
    model = yolo_like.make_model()
    torchqat.quantize_model(model, custom_quant_modules={yolo_like.Add: quant_nn.QuantAdd,
                                                         nn.MaxPool2d: quant_nn.QuantMaxPool2d})
    assert type(model.backbone.res.add) is quant_nn.QuantAdd
    assert type(model.backbone.mp3.mp) is quant_nn.QuantMaxPool2d
    assert model.backbone.mp3.mp.kernel_size == 2 and model.sppcspc.m[2].padding == 6
    x = torch.randn(1, 3, 64, 64)
    assert [o.shape for o in model(x)] == [o.shape for o in yolo_like.make_model()(x)]


def test_shared_module_stays_shared_and_hooks_survive():
    conv = nn.Conv2d(2, 2, 1)
    seen = []
    conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model = nn.Sequential(conv, nn.ReLU(), conv)
    torchqat.quantize_model(model)
    assert model[0] is model[2] and isinstance(model[0], quant_nn.QuantConv2d)
    model(torch.randn(1, 2, 3, 3))
    assert len(seen) == 2
