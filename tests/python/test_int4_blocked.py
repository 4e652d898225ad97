"""Blocked weight quantization (QuantDescriptor(num_bits=4, axis=(0,), block_size=B)): one amax per
block of B inputs of each output row, fake quant against a per-block reference, calibration, QAT,
checkpoints, torch.compile, and export as opset-21 blocked QuantizeLinear / DequantizeLinear run by
ONNX Runtime against the fake-quant forward."""
import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import torchqat
import torchqat.nn as qnn
from torchqat import ops
from torchqat import onnx as tq_onnx
from torchqat.tensor_quant import QuantDescriptor

import ort_check

W4B8 = QuantDescriptor(num_bits=4, axis=(0,), block_size=8)


def _per_block_reference(x, amax, block, bits, unsigned):
    """torch's fake_quantize_per_channel_affine on each column block of x (amax[:, j] for block j)."""
    qmin, qmax = (0, 2 ** bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    bound = qmax
    cols = []
    for j in range(x.shape[1] // block):
        scale = (amax[:, j] / bound).double().float()
        cols.append(torch.fake_quantize_per_channel_affine(
            x[:, j * block:(j + 1) * block], scale, torch.zeros(x.shape[0], dtype=torch.int32), 0, qmin, qmax))
    return torch.cat(cols, 1)


@pytest.mark.parametrize("bits,unsigned", [(4, False), (4, True), (8, False)])
def test_fake_quant_blocked_equals_per_block_reference(bits, unsigned):
    g = torch.Generator().manual_seed(bits + unsigned)
    x = torch.randn(6, 32, generator=g) * torch.linspace(0.1, 3, 32)
    if unsigned:
        x = x.abs()
    amax = ops.abs_max_blocked(x, 8)
    assert amax.shape == (6, 4)
    assert torch.equal(amax, x.abs().reshape(6, 4, 8).amax(-1))
    got = ops.fake_quant_blocked(x, amax, 8, bits, unsigned)
    want = _per_block_reference(x, amax, 8, bits, unsigned)
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    # Every block uses its own grid: at most 2^bits distinct values per block.
    assert all(torch.unique(got.reshape(6, 4, 8)[r, j]).numel() <= 2 ** bits for r in range(6) for j in range(4))


def test_blocked_gradients_equal_per_channel_ops_on_each_block():
    """x and amax gradients (STE, LSQ) equal fake_quant per channel on each block's columns."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, generator=g)
    amax0 = ops.abs_max_blocked(x, 4) * 0.8  # some elements clip
    w = torch.randn(4, 16, generator=g)
    x1, a1 = x.clone().requires_grad_(), amax0.clone().requires_grad_()
    (ops.fake_quant_blocked(x1, a1, 4, 4) * w).sum().backward()
    x2, a2 = x.clone().requires_grad_(), amax0.clone().requires_grad_()
    out = torch.cat([ops.fake_quant(x2[:, 4 * j:4 * j + 4], a2[:, j], 4, False, False, 0) for j in range(4)], 1)
    (out * w).sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    assert torch.allclose(a1.grad, a2.grad, rtol=1e-5, atol=1e-7)
    assert (x1.grad == 0).any() and (x1.grad != 0).any()


def test_descriptor_round_trips_block_size():
    d = QuantDescriptor(num_bits=4, axis=(0,), block_size=16, name="w")
    assert d.block_size == 16 and d.dict()["block_size"] == 16
    assert "block_size=16" in str(d)
    assert QuantDescriptor(**d.dict()) == d and d != QuantDescriptor(num_bits=4, axis=(0,), name="w")
    assert QuantDescriptor.from_yaml(d.to_yaml()) == d
    assert d.replace(block_size=None).block_size is None


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = qnn.QuantLinear(32, 24, quant_desc_weight=W4B8)
        self.fc2 = qnn.QuantLinear(24, 10, quant_desc_weight=QuantDescriptor(num_bits=4, axis=(0,), block_size=12))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 32, generator=g) for _ in range(n)]


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    model = _Mlp()
    torchqat.calibrate(model, _batches(3, 1), method="mse", progress=False)
    return model


def test_calibrate_gives_per_block_weight_amax(mlp):
    for fc, block in ((mlp.fc1, 8), (mlp.fc2, 12)):
        w = fc.weight.detach()
        want = w.abs().reshape(w.shape[0], -1, block).amax(-1)
        assert torch.equal(fc.weight_quantizer.amax, want)
    assert mlp.fc1.input_quantizer.amax.numel() == 1  # activations: per tensor, by the histogram search
    m2 = _Mlp()
    m2.load_state_dict(mlp.state_dict())
    torchqat.calib.calibrate_weights(m2, method="max")
    assert torch.equal(m2.fc1.weight_quantizer.amax, mlp.fc1.weight_quantizer.amax)


def test_uncalibrated_blocked_quantizer_uses_the_batch_amax():
    torch.manual_seed(0)
    m = _Mlp()
    w = m.fc1.weight.detach()
    want = ops.fake_quant_blocked(w, ops.abs_max_blocked(w, 8), 8, 4)
    assert torch.equal(m.fc1.weight_quantizer(w), want)


def test_checkpoint_round_trip_and_qat_step(mlp):
    fresh = _Mlp()
    torchqat.load_state_dict(fresh, mlp.state_dict())
    x = _batches(1, 7)[0]
    assert torch.equal(fresh(x), mlp(x))
    opt = torch.optim.SGD(fresh.parameters(), lr=0.05)
    before = fresh.fc1.weight.detach().clone()
    loss = fresh(x).square().mean()
    loss.backward()
    assert fresh.fc1.weight.grad is not None and torch.isfinite(fresh.fc1.weight.grad).all()
    opt.step()
    assert not torch.equal(before, fresh.fc1.weight)


def test_torch_compile_matches_eager(mlp):
    x = _batches(1, 9)[0]
    compiled = torch.compile(mlp, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), mlp(x))


def test_export_writes_opset_21_blocked_qdq_and_onnx_runtime_matches(mlp):
    x = _batches(1, 11)[0]
    proto, warns = ort_check.export_with_warnings(mlp, x)
    assert any("exported at opset 21 instead of 13" in m for m in warns)
    assert proto.opset_import[0].version == 21 and proto.ir_version >= 10
    assert all(o.domain != "torchqat" for o in proto.opset_import)
    onnx.checker.check_model(proto, full_check=True)
    inits = {t.name: t for t in proto.graph.initializer}
    blocked = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
               and any(a.name == "block_size" for a in n.attribute)]
    assert len(blocked) == 4
    q1 = next(n for n in blocked if n.op_type == "QuantizeLinear" and n.input[0] == "fc1.weight")
    attrs = {a.name: a.i for a in q1.attribute}
    assert attrs == {"axis": 1, "block_size": 8}
    scale = onnx.numpy_helper.to_array(inits[q1.input[1]])
    assert np.array_equal(scale, mlp.fc1.weight_quantizer.amax.numpy() / np.float32(7))
    assert inits[q1.input[2]].data_type == onnx.TensorProto.INT4 and list(inits[q1.input[2]].dims) == [24, 4]
    assert tq_onnx.lint_tensorrt(proto) == []
    ort_check.assert_matches(ort_check.run(proto, x), ort_check.torch_outputs(mlp, x), min_exact=0.9)


def test_blocked_weights_next_to_per_channel_int4_convs():
    """A conv net with per-channel INT4 conv weights and a blocked INT4 classifier, end to end."""
    torch.manual_seed(0)
    w4 = QuantDescriptor(num_bits=4, axis=(0,))
    net = nn.Sequential(qnn.QuantConv2d(3, 8, 3, padding=1, quant_desc_weight=w4), nn.ReLU(),
                        qnn.QuantConv2d(8, 16, 3, stride=2, padding=1, quant_desc_weight=w4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        qnn.QuantLinear(16, 5, quant_desc_weight=QuantDescriptor(num_bits=4, axis=(0,), block_size=4)))
    g = torch.Generator().manual_seed(2)
    torchqat.calibrate(net, [torch.randn(4, 3, 12, 12, generator=g) for _ in range(2)], method="max", progress=False)
    x = torch.randn(3, 3, 12, 12, generator=g)
    proto, _ = ort_check.export_with_warnings(net, x)
    kinds = sorted(next((a.i for a in n.attribute if a.name == "block_size"), 0)
                   for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[0].endswith("weight"))
    assert kinds == [0, 0, 4]
    assert tq_onnx.lint_tensorrt(proto) == []
    ort_check.assert_matches(ort_check.run(proto, x), ort_check.torch_outputs(net, x), min_exact=0.9)


def test_blocked_descriptor_on_a_conv_weight_is_refused_at_forward():
    conv = qnn.QuantConv2d(3, 8, 3, quant_desc_weight=QuantDescriptor(num_bits=4, axis=(0,), block_size=3))
    with pytest.raises(ValueError, match=r"x must be 2-d \(a weight \[out, in\]; blocks run along dim 1\)"):
        conv(torch.randn(1, 3, 8, 8))
