"""Public names that no other test calls, each checked against an independent reference or a
documented property: the amax-check switch, tensor_quant / legacy_fake_tensor_quant,
collect_stats + compute_amax outside calibrate, calibrate_weights' other methods, the ONNX clean-up
passes one by one (ONNX Runtime gives the same outputs before and after each), check_quantizers,
the lint's RULES (each rule fires on a graph built to break it), placement.trace,
tools.quantized_layers and weight_report."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import torchqat
from torchqat import calib, placement, tensor_quant, tools, weight_report
from torchqat import nn as qnn
from torchqat import onnx as tq_onnx
from torchqat.onnx import cleanup


def test_cuda_amax_check_switch_round_trips_and_leaves_cpu_checks_on():
    assert torchqat.cuda_amax_checks() is True  # the documented default
    try:
        torchqat.set_cuda_amax_checks(False)
        assert torchqat.cuda_amax_checks() is False
        # The switch is for CUDA tensors only: on the CPU the check costs no sync and always runs.
        with pytest.raises(ValueError, match="amax must be finite"):
            torch.ops.torchqat.fake_quant(torch.ones(4), torch.tensor(float("nan")))
        with pytest.raises(ValueError, match="amax must be >= 0"):
            torch.ops.torchqat.fake_quant(torch.ones(4), torch.tensor(-1.0))
    finally:
        torchqat.set_cuda_amax_checks(True)
    assert torchqat.cuda_amax_checks() is True


@pytest.mark.skipif(not (torch.cuda.is_available() and torchqat.cuda_compiled()), reason="needs a CUDA build and GPU")
def test_cuda_amax_check_switch_skips_the_cuda_check():
    x = torch.ones(4, device="cuda")
    bad = torch.tensor(float("nan"), device="cuda")
    with pytest.raises(ValueError, match="amax must be finite"):
        torch.ops.torchqat.fake_quant(x, bad)
    try:
        torchqat.set_cuda_amax_checks(False)
        torch.ops.torchqat.fake_quant(x, bad)  # unchecked: the caller vouches for amax
    finally:
        torchqat.set_cuda_amax_checks(True)


def _reference_quant(x, amax, bound):
    """numpy: round half to even of x * bound / amax, clamped to [-bound, bound] (narrow range)."""
    scale = np.float32(bound) / np.float32(amax)
    return np.clip(np.rint(x.numpy() * scale), -bound, bound), scale


def test_tensor_quant_returns_integers_and_the_scale():
    torch.manual_seed(0)
    x = torch.randn(4096) * 3
    q, scale = tensor_quant.tensor_quant(x, torch.tensor(2.5))
    ref, ref_scale = _reference_quant(x, 2.5, 127)
    assert q.dtype == x.dtype and float(scale) == pytest.approx(float(ref_scale), rel=1e-7)
    np.testing.assert_array_equal(q.numpy(), ref)
    q4, scale4 = tensor_quant.tensor_quant(x, 2.5, num_bits=4, unsigned=False)
    ref4, ref_scale4 = _reference_quant(x, 2.5, 7)
    np.testing.assert_array_equal(q4.numpy(), ref4)
    assert float(scale4) == pytest.approx(float(ref_scale4), rel=1e-7)


def test_legacy_fake_tensor_quant_matches_torch_fake_quantize():
    torch.manual_seed(1)
    x = torch.randn(4096) * 2
    amax = 1.7
    got = tensor_quant.legacy_fake_tensor_quant(x, torch.tensor(amax))
    ref = torch.fake_quantize_per_tensor_affine(x, amax / 127, 0, -127, 127)
    # x * (127 / amax) and torch's x / (amax / 127) may round differently at an exact half step:
    # at most one step apart, and on all but a few elements exact.
    step = amax / 127
    assert (got - ref).abs().max().item() <= step * 1.0001
    assert (got == ref).float().mean().item() > 0.999


def _linear_net():
    torch.manual_seed(2)
    return nn.Sequential(qnn.QuantLinear(6, 5), nn.ReLU(), qnn.QuantLinear(5, 3))


def test_collect_stats_then_compute_amax_gives_the_running_max_of_each_input():
    model = _linear_net()
    batches = [torch.randn(8, 6) * s for s in (1.0, 3.0, 0.5)]
    calib.collect_stats(model, batches, method="max", progress=False)
    calib.compute_amax(model, method="max")
    with torch.no_grad():
        first_in = max(b.abs().max().item() for b in batches)
        # The second layer's input: the float ReLU output of the first layer, whose input and weight
        # were not quantized while collecting.
        second_in = max(torch.relu(b @ model[0].weight.T + model[0].bias).abs().max().item() for b in batches)
    assert model[0]._input_quantizer.amax.item() == pytest.approx(first_in, rel=1e-6)
    assert model[2]._input_quantizer.amax.item() == pytest.approx(second_in, rel=1e-6)
    # Weights: per output row (QuantLinear's default descriptor).
    w_ref = model[0].weight.detach().abs().amax(dim=1)
    torch.testing.assert_close(model[0]._weight_quantizer.amax.flatten(), w_ref, rtol=0, atol=0)
    # Quantization is back on, calibration off.
    assert all(q._if_quant and not q._if_calib for q in (model[0]._input_quantizer, model[2]._input_quantizer))


def _reference_percentile(values, p, num_bins=2048):
    """numpy: pytorch-quantization's rule, the left edge of the bin where the CDF of |values|' histogram
    (num_bins bins over [0, max|v|]) reaches p %."""
    a = np.abs(values.numpy().astype(np.float64))
    counts, edges = np.histogram(a, bins=num_bins, range=(0, a.max()))
    cdf = np.cumsum(counts) / counts.sum()
    idx = int(np.searchsorted(cdf, p / 100))
    return edges[idx]


def test_calibrate_weights_percentile_per_tensor_and_per_channel():
    model = _linear_net()
    calib.calibrate_weights(model, method="percentile", perchannel=False, percentile=99.0)
    w = model[0].weight.detach()
    ref = _reference_percentile(w.flatten(), 99.0)
    assert model[0]._weight_quantizer.amax.shape == ()
    # One bin of width max|w| / 2048 is the resolution of a histogram method.
    width = w.abs().max().item() / 2048
    assert model[0]._weight_quantizer.amax.item() == pytest.approx(ref, abs=width)
    model = _linear_net()  # a fresh one: amax keeps its shape once set (pytorch-quantization's rule)
    calib.calibrate_weights(model, method="percentile", perchannel=True, percentile=99.0)
    got = model[0]._weight_quantizer.amax
    assert got.shape == (5, 1)
    for row in range(5):
        width = w[row].abs().max().item() / 2048
        assert got[row, 0].item() == pytest.approx(_reference_percentile(w[row], 99.0), abs=width)


def _reference_mse_amax(values, num_bits=8, num_bins=2048):
    """numpy brute force: the bin edge amax minimising the mean squared fake-quant error of values."""
    v = values.numpy().astype(np.float64)
    width = np.abs(v).max() / num_bins
    bound = 2 ** (num_bits - 1) - 1
    best, best_err = None, np.inf
    for i in range(num_bins // 8, num_bins + 1):
        amax = i * width
        q = np.clip(np.rint(v * bound / amax), -bound, bound) * amax / bound
        err = np.mean((q - v) ** 2)
        if err < best_err:
            best, best_err = amax, err
    return best, best_err


def test_calibrate_weights_mse_is_near_the_brute_force_optimum():
    torch.manual_seed(4)
    layer = qnn.QuantLinear(512, 2)
    with torch.no_grad():
        layer.weight.normal_()
        layer.weight[0, :4] = torch.tensor([9.0, -8.0, 7.5, 8.5])  # outliers: a long empty tail
    calib.calibrate_weights(nn.Sequential(layer), method="mse", perchannel=False)
    got = layer._weight_quantizer.amax.item()
    v = layer.weight.detach().flatten().numpy().astype(np.float64)
    best, best_err = _reference_mse_amax(layer.weight.detach().flatten())
    err = np.mean((np.clip(np.rint(v * 127 / got), -127, 127) * got / 127 - v) ** 2)
    # The histogram search minimises the error of bin centres, not of the values themselves: it must
    # land within 2 % of the brute-force optimum's error.
    assert err <= best_err * 1.02, (got, best)


# ---- the ONNX clean-up passes, one by one --------------------------------------------------------

def _qdq(name, x, scale, zp, out):
    return [helper.make_node("QuantizeLinear", [x, scale, zp], [name + "_q"], name=name + "Q"),
            helper.make_node("DequantizeLinear", [name + "_q", scale, zp], [out], name=name + "DQ")]


def _model(nodes, inits, outputs=("y",), opset=13):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 3]) for o in outputs], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _scale(name, value):
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def _zp(name):
    return numpy_helper.from_array(np.array(0, dtype=np.int8), name)


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


X = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)


def _check_pass(fn, model, expect_changes):
    before = _run(model, X)
    changed = fn(model)
    onnx.checker.check_model(model)
    after = _run(model, X)
    assert changed == expect_changes
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    return model


def test_bypass_constant_identities_reads_the_initializer_directly():
    nodes = [helper.make_node("Identity", ["s"], ["s_id"]), helper.make_node("Identity", ["z"], ["z_id"])]
    nodes += _qdq("a", "x", "s_id", "z_id", "y")
    model = _check_pass(cleanup.bypass_constant_identities, _model(nodes, [_scale("s", 0.02), _zp("z")]), 2)
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear"]
    assert list(model.graph.node[0].input) == ["x", "s", "z"]


def test_share_scale_initializers_makes_equal_scales_one():
    nodes = _qdq("a", "x", "s1", "z1", "ya") + _qdq("b", "x", "s2", "z2", "yb")
    nodes.append(helper.make_node("Add", ["ya", "yb"], ["y"]))
    inits = [_scale("s1", 0.02), _scale("s2", 0.02), _zp("z1"), _zp("z2")]
    model = _check_pass(cleanup.share_scale_initializers, _model(nodes, inits), 2)
    assert sorted(t.name for t in model.graph.initializer) == ["s1", "z1"]
    # Different values stay apart.
    nodes = _qdq("a", "x", "s1", "z1", "ya") + _qdq("b", "x", "s2", "z2", "yb")
    nodes.append(helper.make_node("Add", ["ya", "yb"], ["y"]))
    inits = [_scale("s1", 0.02), _scale("s2", 0.03), _zp("z1"), _zp("z2")]
    _check_pass(cleanup.share_scale_initializers, _model(nodes, inits), 1)  # the zero points only


def test_merge_duplicate_qdq_computes_a_shared_pair_once():
    nodes = _qdq("a", "x", "s", "z", "ya") + _qdq("b", "x", "s", "z", "yb")
    nodes.append(helper.make_node("Mul", ["ya", "yb"], ["y"]))
    model = _check_pass(cleanup.merge_duplicate_qdq, _model(nodes, [_scale("s", 0.02), _zp("z")]), 2)
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear", "Mul"]


def test_drop_requantize_removes_a_second_identical_pair():
    # (A DequantizeLinear that writes a graph output is kept: its name is part of the interface.)
    relu = helper.make_node("Relu", ["yb"], ["y"])
    nodes = _qdq("a", "x", "s", "z", "ya") + _qdq("b", "ya", "s", "z", "yb") + [relu]
    model = _check_pass(cleanup.drop_requantize, _model(nodes, [_scale("s", 0.02), _zp("z")]), 2)
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear", "Relu"]
    # With another scale the second pair changes values: it stays.
    nodes = _qdq("a", "x", "s", "z", "ya") + _qdq("b", "ya", "s2", "z", "yb") + [relu]
    _check_pass(cleanup.drop_requantize, _model(nodes, [_scale("s", 0.02), _scale("s2", 0.05), _zp("z")]), 0)


# ---- check_quantizers -----------------------------------------------------------------------------

def _calibrated_conv():
    m = qnn.QuantConv2d(3, 4, 3)
    m._input_quantizer.amax = torch.tensor(1.0)
    m._weight_quantizer.amax = m.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    return nn.Sequential(m)


def test_check_quantizers_accepts_calibrated_and_names_each_refusal():
    tq_onnx.check_quantizers(_calibrated_conv())  # no error
    m = _calibrated_conv()
    m[0]._input_quantizer._fake_quant = False
    with pytest.raises(ValueError, match=r"0\._input_quantizer uses real quantization"):
        tq_onnx.check_quantizers(m)
    m = _calibrated_conv()
    m[0]._input_quantizer.enable_calib()
    with pytest.raises(RuntimeError, match=r"0\._input_quantizer is in calibration mode"):
        tq_onnx.check_quantizers(m)
    m = _calibrated_conv()
    m[0]._input_quantizer._amax.fill_(float("inf"))  # bypasses the setter, as a corrupted buffer would
    with pytest.raises(ValueError, match=r"0\._input_quantizer has a non-finite amax"):
        tq_onnx.check_quantizers(m)
    m = _calibrated_conv()
    m[0]._weight_quantizer._amax.neg_()
    with pytest.raises(ValueError, match=r"0\._weight_quantizer has a negative amax"):
        tq_onnx.check_quantizers(m)


# ---- every lint rule fires on a graph built to break it ------------------------------------------

def _conv_graph(weight_dq_axis=0, act_zp=0, scale=0.02, opset=13, identity_scale=False, scale_input=False,
                zp_dtype=np.int8, per_channel_act=False, float_weight=False):
    w = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    wq = np.clip(np.rint(w / 0.01), -127, 127).astype(np.int8)
    inits = [numpy_helper.from_array(wq, "wq"), _scale("ws", np.full(4 if weight_dq_axis is not None else (), 0.01)),
             numpy_helper.from_array(np.zeros(4 if weight_dq_axis is not None else (), np.int8), "wz"),
             numpy_helper.from_array(w, "wf"),
             numpy_helper.from_array(np.array(act_zp, dtype=zp_dtype), "az")]
    nodes = []
    act_scale = "as"
    if per_channel_act:
        inits.append(_scale("as", np.full(3, scale)))
        inits[4] = numpy_helper.from_array(np.zeros(3, zp_dtype), "az")
    elif not scale_input:
        inits.append(_scale("as", scale))
    if identity_scale:
        nodes.append(helper.make_node("Identity", ["as"], ["as_id"]))
        act_scale = "as_id"
    qkw = {"axis": 1} if per_channel_act else {}
    nodes += [helper.make_node("QuantizeLinear", ["x", act_scale, "az"], ["xq"], name="XQ", **qkw),
              helper.make_node("DequantizeLinear", ["xq", act_scale, "az"], ["xd"], name="XDQ", **qkw)]
    if float_weight:
        nodes.append(helper.make_node("Conv", ["xd", "wf"], ["y"], name="Conv"))
    else:
        dq_kw = {} if weight_dq_axis is None else {"axis": weight_dq_axis}
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="WDQ", **dq_kw))
        nodes.append(helper.make_node("Conv", ["xd", "wd"], ["y"], name="Conv"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])]
    if scale_input:
        inputs.append(helper.make_tensor_value_info("as", TensorProto.FLOAT, []))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _blocked_activation(model):
    """model with its activation Q/DQ given a block_size (TensorRT blocks weights only)."""
    for n in model.graph.node[:2]:
        n.attribute.append(helper.make_attribute("block_size", 2))
    return model


def _rules(model, **kw):
    return {v.rule for v in tq_onnx.lint_tensorrt(model, **kw)}


def test_lint_rules_each_fire_on_a_graph_that_breaks_them():
    assert _rules(_conv_graph()) == set()
    cases = {
        "opset": _conv_graph(opset=12),
        "constant-scale": _conv_graph(scale_input=True),
        "identity-scale": _conv_graph(identity_scale=True),
        "scale-value": _conv_graph(scale=0.0),
        "zero-point": _conv_graph(zp_dtype=np.int16),
        "symmetric": _conv_graph(act_zp=3),
        "per-tensor-activation": _conv_graph(per_channel_act=True),
        "weight-axis": _conv_graph(weight_dq_axis=1),
        "quantized-inputs": _conv_graph(float_weight=True),
        "block": _blocked_activation(_conv_graph(opset=21)),
    }
    for rule, model in cases.items():
        kw = {"allow_float_layers": False} if rule == "quantized-inputs" else {}
        assert rule in _rules(model, **kw), rule
    # A Q feeding a DQ with another scale breaks the pair.
    m = _conv_graph()
    m.graph.initializer.append(_scale("as2", 0.04))
    m.graph.node[1].input[1] = "as2"
    assert "qdq-pair" in _rules(m)
    # The three sharing rules are exercised on exported models in test_onnx_export.py and
    # test_residual_placement.py; here only that every rule listed is one of the checks above or those.
    assert set(tq_onnx.RULES) == set(cases) | {"qdq-pair", "concat-scale", "maxpool-scale", "residual-add"}


# ---- placement.trace, tools.quantized_layers, weight_report ---------------------------------------

class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _DataDependent()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.body(x))


class _DataDependent(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x  # data-dependent: fx cannot trace through it


def test_placement_trace_makes_untraceable_submodules_leaves():
    graph, auto = placement.trace(_Branchy())
    assert auto == ["body"]
    targets = [n.target for n in graph.nodes if n.op == "call_module"]
    assert targets == ["body", "head"]
    graph, auto = placement.trace(_Branchy(), leaf_modules=[nn.Linear])
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["body", "head"] and auto == ["body"]
    with pytest.raises(TypeError, match="leaf_modules must hold module names or classes"):
        placement.trace(_Branchy(), leaf_modules=[3])


def test_quantized_layers_lists_owners_of_enabled_quantizers():
    model = nn.Sequential(qnn.QuantConv2d(3, 4, 3), nn.ReLU(), qnn.QuantLinear(4, 2))
    assert tools.quantized_layers(model) == [("0", ["_input_quantizer", "_weight_quantizer"]),
                                             ("2", ["_input_quantizer", "_weight_quantizer"])]
    model[2]._input_quantizer.disable()
    model[2]._weight_quantizer.disable()
    assert tools.quantized_layers(model) == [("0", ["_input_quantizer", "_weight_quantizer"])]


def test_weight_report_error_matches_an_independent_per_channel_reference():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 4, 2), nn.Linear(5, 6))
    rows = weight_report.weight_quant_errors(model, num_bits=4)
    assert [r[0] for r in rows] == ["0", "1", "2"]
    for (name, shape, wmax, err, sqnr), mod, axis in zip(rows, model, (0, 1, 0)):
        w = mod.weight.detach().double()
        dims = [d for d in range(w.dim()) if d != axis]
        amax = w.abs().amax(dim=dims, keepdim=True)
        q = torch.clamp(torch.round(w * 7 / amax), -8, 7) * amax / 7
        ref = (torch.linalg.vector_norm(q - w) / torch.linalg.vector_norm(w)).item()
        assert shape == tuple(w.shape) and wmax == pytest.approx(w.abs().max().item(), rel=1e-6)
        assert err == pytest.approx(ref, rel=1e-4)
        assert sqnr == pytest.approx(-20 * np.log10(ref), rel=1e-4)


def test_weight_report_command_prints_a_row_per_layer(capsys):
    weight_report.main(["--bits", "6"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["layer", "shape", "max|w|", "rel.", "error", "SQNR", "dB"]
    assert len(out) == 1 + 4  # three convs and the Linear of the demo model
