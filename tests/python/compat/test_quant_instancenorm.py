"""QuantInstanceNorm1d/2d/3d: InstanceNorm of the input-quantized tensor, QuantInputMixin only."""
import pytest
import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat.nn.modules import quant_instancenorm
from torchqat.tensor_quant import QuantDescriptor

SHAPES = {1: (2, 3, 10), 2: (2, 3, 6, 5), 3: (2, 3, 4, 3, 5)}


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_class_relations_and_aliases(nd):
    cls = getattr(quant_nn, f"QuantInstanceNorm{nd}d")
    assert getattr(quant_nn, f"InstanceNorm{nd}d") is cls
    assert getattr(quant_instancenorm, f"QuantInstanceNorm{nd}d") is cls
    m = cls(3)
    assert isinstance(m, getattr(nn, f"InstanceNorm{nd}d")) and isinstance(m, quant_nn.QuantInputMixin)
    assert not hasattr(m, "_weight_quantizer") and m._input_quantizer.axis is None


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("affine,track", [(False, False), (True, True)])
def test_forward_is_instancenorm_of_fake_quantized_input(nd, affine, track):
    ref = getattr(nn, f"InstanceNorm{nd}d")(3, affine=affine, track_running_stats=track)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-1, 1)
    m = getattr(quant_nn, f"QuantInstanceNorm{nd}d").from_float(ref)
    m._input_quantizer.amax = torch.tensor(1.5)
    x = torch.randn(SHAPES[nd]) * 2
    xq = torch.fake_quantize_per_tensor_affine(x, 1.5 / 127, 0, -128, 127)
    ref.eval(), m.eval()
    assert torch.equal(m(x), ref(xq))
    m._input_quantizer.disable()
    assert torch.equal(m(x), ref(x))
    m._input_quantizer.enable()
    ref.train(), m.train()
    y = m(x)
    assert torch.equal(y, ref(xq))
    if track:
        assert torch.equal(m.running_mean, ref.running_mean)


def test_descriptor_kwargs_state_dict_and_quantize_model_opt_in():
    m = quant_nn.QuantInstanceNorm2d(3, affine=True, quant_desc_input=QuantDescriptor(num_bits=6, unsigned=True))
    assert m._input_quantizer.num_bits == 6 and m._input_quantizer.unsigned
    with pytest.raises(TypeError, match="Unused keys"):
        quant_nn.QuantInstanceNorm2d(3, quant_desc_weight=QuantDescriptor())
    m._input_quantizer.amax = torch.tensor(2.0)
    assert set(m.state_dict()) == {"weight", "bias", "_input_quantizer._amax"}
    # not in the default map (as in pytorch-quantization): replaced only when asked for
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.InstanceNorm2d(3))
    torchqat.quantize_model(net)
    assert type(net[1]) is nn.InstanceNorm2d
    torchqat.quantize_model(net, custom_quant_modules={"InstanceNorm2d": quant_nn.QuantInstanceNorm2d})
    assert isinstance(net[1], quant_nn.QuantInstanceNorm2d)
    with pytest.raises(TypeError, match="expects a torch.nn.InstanceNorm2d"):
        quant_nn.QuantInstanceNorm2d.from_float(nn.BatchNorm2d(3))


def test_onnx_export_puts_qdq_before_instancenormalization(tmp_path):
    import onnxruntime as ort
    from torchqat import onnx as tq_onnx

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, affine=True))
    torchqat.quantize_model(net, custom_quant_modules={"InstanceNorm2d": quant_nn.QuantInstanceNorm2d})
    x = torch.randn(2, 3, 8, 8)
    torchqat.calibrate(net, [x], progress=False)
    net.eval()
    path = str(tmp_path / "in.onnx")
    ops = [n.op_type for n in tq_onnx.export(net, (x,), path).graph.node if n.op_type != "Constant"]
    assert ops[-3:] == ["QuantizeLinear", "DequantizeLinear", "InstanceNormalization"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        # A value that rounds to the other side of a tie moves one input step, which the norm
        # scales by gamma / sigma of its instance: that is the per-element bound.
        step = float(net[1]._input_quantizer.amax) / 127
        xq = net[1]._input_quantizer(net[0](x))
        sigma = (xq.var(dim=(2, 3), unbiased=False, keepdim=True) + net[1].eps).sqrt()
        bound = step * net[1].weight.abs().reshape(1, -1, 1, 1) / sigma * 1.01 + 1e-5
        err = (got - net(x)).abs()
        assert (err <= bound).all(), (err / bound).max()
        # a flip moves its whole instance (mean and variance change); the others agree to float rounding
        assert (err < 1e-5).float().mean() > 0.5
