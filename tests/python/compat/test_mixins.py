"""nn.modules._utils: the two mixins are unrelated classes, init_quantizer works on an object
made with __new__ (NVIDIA's transfer_torch_to_quantization), pop_quant_desc_in_kwargs, defaults."""
import copy
import importlib

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import torchqat
from torchqat import nn as quant_nn
from torchqat import ops
from torchqat import tensor_quant
from torchqat.nn.modules import _utils as quant_nn_utils
from torchqat.tensor_quant import QuantDescriptor


def test_mixins_are_unrelated_classes():
    assert quant_nn_utils.QuantMixin.__bases__ == (object,)
    assert quant_nn_utils.QuantInputMixin.__bases__ == (object,)
    assert not issubclass(quant_nn_utils.QuantMixin, quant_nn_utils.QuantInputMixin)
    assert not issubclass(quant_nn_utils.QuantInputMixin, quant_nn_utils.QuantMixin)


@pytest.mark.parametrize("cls", [quant_nn.QuantConv1d, quant_nn.QuantConv2d, quant_nn.QuantConv3d,
                                 quant_nn.QuantConvTranspose1d, quant_nn.QuantConvTranspose2d,
                                 quant_nn.QuantConvTranspose3d, quant_nn.QuantLinear])
def test_weighted_modules_are_quant_mixin_only(cls):
    assert issubclass(cls, quant_nn_utils.QuantMixin)
    assert not issubclass(cls, quant_nn_utils.QuantInputMixin)


@pytest.mark.parametrize("name", ["MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
                                  "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d"])
def test_pooling_is_quant_input_mixin_only(name):
    cls = getattr(quant_nn, "Quant" + name)
    assert issubclass(cls, quant_nn_utils.QuantInputMixin)
    assert not issubclass(cls, quant_nn_utils.QuantMixin)
    assert getattr(quant_nn, name) is cls
    assert not hasattr(cls, "default_quant_desc_weight")


def test_class_defaults():
    assert quant_nn_utils.QuantMixin.default_quant_desc_input == tensor_quant.QUANT_DESC_8BIT_PER_TENSOR
    assert quant_nn_utils.QuantMixin.default_quant_desc_weight == tensor_quant.QUANT_DESC_8BIT_PER_TENSOR
    assert quant_nn_utils.QuantInputMixin.default_quant_desc_input == tensor_quant.QUANT_DESC_8BIT_PER_TENSOR
    assert quant_nn.QuantConv2d.default_quant_desc_weight.axis == (0,)
    assert quant_nn.QuantConvTranspose2d.default_quant_desc_weight.axis == (1,)
    assert quant_nn.QuantLinear.default_quant_desc_weight.axis == (0,)


def _transfer(float_module, quant_cls):
    """NVIDIA's YOLOv7 transfer_torch_to_quantization, in our words: __new__, vars() copy, init_quantizer."""
    q = quant_cls.__new__(quant_cls)
    for k, v in vars(float_module).items():
        setattr(q, k, v)

    def __init__(self):  # noqa: N807 - named __init__ as in the recipe
        desc_in, desc_w = quant_nn_utils.pop_quant_desc_in_kwargs(self.__class__)
        if isinstance(self, quant_nn_utils.QuantInputMixin):
            self.init_quantizer(desc_in)
        else:
            self.init_quantizer(desc_in, desc_w)

    __init__(q)
    return q


def test_transfer_conv_by_new_and_vars_copy():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    q = _transfer(conv, quant_nn.QuantConv2d)
    assert isinstance(q, quant_nn.QuantConv2d) and q.weight is conv.weight  # shared, as in the recipe
    assert isinstance(q._input_quantizer, quant_nn.TensorQuantizer)
    assert q._weight_quantizer.axis == (0,) and q.input_quantizer is q._input_quantizer
    assert q.weight_quantizer is q._weight_quantizer
    x = torch.randn(2, 3, 5, 5)
    # Dynamic mode: each quantizer uses the current tensor's amax (per channel for the weight).
    w_amax = conv.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    ref = F.conv2d(ops.fake_quant(x, x.abs().max()), ops.fake_quant(conv.weight, w_amax), conv.bias, padding=1)
    assert torch.equal(q(x), ref)
    q._input_quantizer.amax = 1.5
    q._weight_quantizer.amax = w_amax
    assert set(q.state_dict()) == {"weight", "bias", "_input_quantizer._amax", "_weight_quantizer._amax"}


def test_transfer_pooling_takes_the_input_only_branch():
    pool = nn.AvgPool2d(2)
    q = quant_nn.QuantAvgPool2d.__new__(quant_nn.QuantAvgPool2d)
    for k, v in vars(pool).items():
        setattr(q, k, v)
    q.init_quantizer(quant_nn_utils.pop_quant_desc_in_kwargs(type(q), input_only=True))
    assert isinstance(q, quant_nn_utils.QuantInputMixin) and not hasattr(q, "_weight_quantizer")
    x = torch.rand(1, 2, 4, 4)
    assert torch.equal(q(x), F.avg_pool2d(ops.fake_quant(x, x.abs().max()), 2))
    with pytest.raises(AttributeError):  # as upstream: pooling classes have no weight default
        quant_nn_utils.pop_quant_desc_in_kwargs(type(q))


def test_init_quantizer_rejects_real_quantization():
    conv = quant_nn.QuantConv2d.__new__(quant_nn.QuantConv2d)
    nn.Module.__init__(conv)
    with pytest.raises(ValueError, match="Only fake quantization is supported!"):
        conv.init_quantizer(QuantDescriptor(fake_quant=False), QuantDescriptor())
    with pytest.raises(ValueError, match="Only fake quantization is supported!"):
        quant_nn.QuantMaxPool2d(2, quant_desc_input=QuantDescriptor(fake_quant=False))


def test_pop_quant_desc_in_kwargs():
    d_in, d_w = QuantDescriptor(num_bits=6), QuantDescriptor(num_bits=7, axis=(0,))
    got = quant_nn_utils.pop_quant_desc_in_kwargs(quant_nn.QuantLinear, quant_desc_input=d_in, quant_desc_weight=d_w)
    assert got == (d_in, d_w)
    assert quant_nn_utils.pop_quant_desc_in_kwargs(quant_nn.QuantLinear) == (
        quant_nn.QuantLinear.default_quant_desc_input, quant_nn.QuantLinear.default_quant_desc_weight)
    assert quant_nn_utils.pop_quant_desc_in_kwargs(quant_nn.QuantMaxPool2d, input_only=True, quant_desc_input=d_in) \
        is d_in
    with pytest.raises(TypeError, match="Unused keys"):
        quant_nn_utils.pop_quant_desc_in_kwargs(quant_nn.QuantLinear, foo=1)
    with pytest.raises(TypeError, match="Unused keys"):  # input_only: a weight descriptor is a leftover
        quant_nn_utils.pop_quant_desc_in_kwargs(quant_nn.QuantMaxPool2d, True, quant_desc_weight=d_w)


def test_set_default_is_per_class_and_deep_copied():
    saved = (quant_nn.QuantConv2d.__dict__.get("default_quant_desc_input"),
             quant_nn.QuantMaxPool2d.__dict__.get("default_quant_desc_input"))
    try:
        desc = QuantDescriptor(calib_method="histogram")
        quant_nn.QuantConv2d.set_default_quant_desc_input(desc)
        quant_nn.QuantMaxPool2d.set_default_quant_desc_input(desc)
        assert quant_nn.QuantConv2d.default_quant_desc_input == desc
        assert quant_nn.QuantConv2d.default_quant_desc_input is not desc
        # The other classes and the mixins keep theirs.
        assert quant_nn.QuantLinear.default_quant_desc_input.calib_method == "max"
        assert quant_nn_utils.QuantMixin.default_quant_desc_input.calib_method == "max"
        assert quant_nn_utils.QuantInputMixin.default_quant_desc_input.calib_method == "max"
        assert type(quant_nn.QuantConv2d(1, 1, 1)._input_quantizer._calibrator).__name__ == "HistogramCalibrator"
        with pytest.raises(ValueError):
            quant_nn.QuantConv2d.set_default_quant_desc_input("histogram")
        with pytest.raises(ValueError):
            quant_nn.QuantConv2d.set_default_quant_desc_weight(None)
    finally:
        for cls, old in zip((quant_nn.QuantConv2d, quant_nn.QuantMaxPool2d), saved):
            if old is None:
                delattr(cls, "default_quant_desc_input")
            else:
                cls.default_quant_desc_input = old


@pytest.mark.parametrize("mod, names", [
    ("quant_conv", ["QuantConv1d", "QuantConv2d", "QuantConv3d", "QuantConvTranspose1d", "QuantConvTranspose2d",
                    "QuantConvTranspose3d", "Conv2d", "ConvTranspose2d"]),
    ("quant_linear", ["QuantLinear", "Linear"]),
    ("quant_pooling", ["QuantMaxPool2d", "QuantAvgPool2d", "QuantAdaptiveAvgPool2d", "MaxPool2d", "AvgPool2d"]),
    ("tensor_quantizer", ["TensorQuantizer"]),
    ("_utils", ["QuantMixin", "QuantInputMixin", "pop_quant_desc_in_kwargs"]),
])
def test_module_paths_and_reexports(mod, names):
    m = importlib.import_module(f"torchqat.nn.modules.{mod}")
    for name in names:
        assert hasattr(m, name), f"torchqat.nn.modules.{mod} has no {name}"
        if not mod.startswith("_"):
            assert getattr(quant_nn, name) is getattr(m, name)
    assert torchqat.nn.modules.tensor_quantizer.TensorQuantizer is quant_nn.TensorQuantizer


def test_deepcopy_of_transferred_module():
    q = _transfer(nn.Conv2d(2, 2, 1), quant_nn.QuantConv2d)
    c = copy.deepcopy(q)
    assert isinstance(c, quant_nn.QuantConv2d) and c._input_quantizer is not q._input_quantizer
