"""QuantLSTM / QuantLSTMCell against torch.nn.LSTM (quantizers off, bit for bit) and against a
reference built from torch.fake_quantize_* and the LSTM equations (quantizers on), with
pytorch-quantization's quantizer layout: per layer x direction, the input quantizer sees
cat([x_t, h_{t-1}], 1) at every step and the per-row weight quantizer cat([W_ih, W_hh], 1)."""
import io
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import torchqat
from torchqat import calib, quant_modules
from torchqat import nn as quant_nn
from torchqat.nn.modules import quant_rnn
from torchqat.tensor_quant import QuantDescriptor

CONFIGS = [  # num_layers, bidirectional, batch_first, bias
    (1, False, False, True),
    (2, True, False, True),
    (3, False, True, False),
    (2, True, True, True),
]


def _fq_tensor(x, amax):
    return torch.fake_quantize_per_tensor_affine(x, float(amax) / 127, 0, -128, 127)


def _fq_rows(w, amax):
    scale = (amax.reshape(-1) / 127).float()
    return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(scale.numel(), dtype=torch.int32), 0,
                                                  -128, 127)


def _ref_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, in_amax, w_amax):
    """The LSTM equations on fake-quantized operands; amax None means 'of this tensor' (dynamic)."""
    H, I = h.size(1), x.size(1)
    xh = torch.cat([x, h], 1)
    a = xh.detach().abs().max() if in_amax is None else in_amax
    xq, hq = _fq_tensor(xh, a).split([I, H], 1)
    w = torch.cat([w_ih, w_hh], 1)
    wa = w.detach().abs().amax(1) if w_amax is None else w_amax
    wq_ih, wq_hh = _fq_rows(w, wa).split([I, H], 1)
    gates = F.linear(xq, wq_ih, b_ih) + F.linear(hq, wq_hh, b_hh)
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _ref_lstm(m, x, hx, in_amax=None, w_amax=None):
    """Reference stack over a time-major or batch-first input, per pytorch-quantization's layout."""
    D = 2 if m.bidirectional else 1
    x = x.transpose(0, 1) if m.batch_first else x
    h0, c0 = hx
    hn, cn = [], []
    for layer in range(m.num_layers):
        outs = []
        for d in range(D):
            l = layer * D + d
            w = m.all_weights[l]
            b = w[2:] if m.bias else (None, None)
            h, c = h0[l], c0[l]
            steps = range(x.size(0) - 1, -1, -1) if d else range(x.size(0))
            seq = [None] * x.size(0)
            for t in steps:
                h, c = _ref_cell(x[t], h, c, w[0], w[1], *b, None if in_amax is None else in_amax[l],
                                 None if w_amax is None else w_amax[l])
                seq[t] = h
            outs.append(torch.stack(seq))
            hn.append(h)
            cn.append(c)
        x = torch.cat(outs, -1)
    x = x.transpose(0, 1) if m.batch_first else x
    return x, (torch.stack(hn), torch.stack(cn))


def _disable_all(m):
    for q in m.modules():
        if isinstance(q, quant_nn.TensorQuantizer):
            q.disable()


def _pair(layers, bidir, batch_first, bias, dropout=0.0):
    ref = nn.LSTM(5, 7, layers, bias=bias, batch_first=batch_first, dropout=dropout, bidirectional=bidir)
    return ref, quant_nn.QuantLSTM.from_float(ref)


def test_names_aliases_and_layout():
    assert quant_nn.LSTM is quant_nn.QuantLSTM and quant_nn.LSTMCell is quant_nn.QuantLSTMCell
    assert quant_rnn.LSTM is quant_rnn.QuantLSTM and issubclass(quant_nn.QuantLSTM, quant_rnn.QuantRNNBase)
    assert issubclass(quant_nn.QuantLSTMCell, quant_rnn.QuantRNNCellBase)
    assert isinstance(quant_nn.QuantLSTM(4, 8), quant_nn.QuantMixin)
    m = quant_nn.QuantLSTM(4, 8, num_layers=2, bidirectional=True)
    assert len(m._input_quantizers) == len(m._weight_quantizers) == 4
    assert all(q.axis is None for q in m._input_quantizers)
    assert all(q.axis == (0,) for q in m._weight_quantizers)
    ref_keys = list(nn.LSTM(4, 8, num_layers=2, bidirectional=True).state_dict())
    assert list(m.state_dict()) == ref_keys  # no amax yet: dynamic quantizers add no keys
    m(torch.randn(3, 2, 4))
    for q in m.modules():
        if isinstance(q, quant_nn.TensorQuantizer):
            q.amax = torch.tensor(1.0)
    keys = list(m.state_dict())
    assert keys[:len(ref_keys)] == ref_keys
    assert keys[len(ref_keys):] == [f"_input_quantizers.{i}._amax" for i in range(4)] + \
        [f"_weight_quantizers.{i}._amax" for i in range(4)]
    cell = quant_nn.QuantLSTMCell(4, 8)
    assert [k for k in cell.state_dict()] == list(nn.LSTMCell(4, 8).state_dict())
    assert isinstance(cell._input_quantizer, quant_nn.TensorQuantizer)
    assert cell._weight_quantizer.axis == (0,)


@pytest.mark.parametrize("layers,bidir,batch_first,bias", CONFIGS)
def test_disabled_equals_nn_lstm_bit_for_bit(layers, bidir, batch_first, bias):
    ref, m = _pair(layers, bidir, batch_first, bias)
    _disable_all(m)
    x = torch.randn(6, 3, 5)
    B = x.size(0 if batch_first else 1)
    hx = (torch.randn(layers * (1 + bidir), B, 7), torch.randn(layers * (1 + bidir), B, 7))
    for args in ((x,), (x, hx)):
        y, (h, c) = m(*args)
        y_ref, (h_ref, c_ref) = ref(*args)
        assert torch.equal(y, y_ref) and torch.equal(h, h_ref) and torch.equal(c, c_ref)
    y.sum().backward()
    ref(x, hx)[0].sum().backward()
    for (name, p), p_ref in zip(m.named_parameters(), ref.parameters()):
        assert torch.equal(p.grad, p_ref.grad), name


def test_disabled_equals_nn_lstm_with_dropout_unbatched_and_packed():
    ref, m = _pair(2, True, False, True, dropout=0.3)
    _disable_all(m)
    ref.train(), m.train()
    x = torch.randn(6, 3, 5)
    torch.manual_seed(1)
    y = m(x)[0]
    torch.manual_seed(1)
    assert torch.equal(y, ref(x)[0])
    ref.eval(), m.eval()
    assert torch.equal(m(x[:, 0])[0], ref(x[:, 0])[0])  # unbatched [T, I]
    packed = pack_padded_sequence(x, torch.tensor([4, 6, 2]), enforce_sorted=False)
    y, (h, c) = m(packed)
    y_ref, (h_ref, c_ref) = ref(packed)
    assert torch.equal(y.data, y_ref.data) and torch.equal(h, h_ref) and torch.equal(c, c_ref)
    assert torch.equal(y.unsorted_indices, y_ref.unsorted_indices)


@pytest.mark.parametrize("layers,bidir,batch_first,bias", CONFIGS)
def test_dynamic_quantization_matches_fake_quantize_reference(layers, bidir, batch_first, bias):
    _, m = _pair(layers, bidir, batch_first, bias)
    x = torch.randn(6, 3, 5)
    D, B = layers * (1 + bidir), x.size(0 if batch_first else 1)
    hx = (torch.randn(D, B, 7), torch.randn(D, B, 7))
    y, (h, c) = m(x, hx)
    y_ref, (h_ref, c_ref) = _ref_lstm(m, x, hx)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-6)
    # quantization really happened: the float LSTM differs
    _disable_all(m)
    assert (m(x, hx)[0] - y).abs().max() > 1e-4


def test_calibrated_amax_matches_reference_and_gradients_match_autograd():
    _, m = _pair(2, True, False, True)
    x = torch.randn(5, 4, 5) * 2
    # torch's STE passes |x| up to 127.5 steps, torchqat's up to amax: keep x out of that half step
    x[(x.abs() > 2.5) & (x.abs() < 2.52)] = 3.0
    hx = (torch.randn(4, 4, 7), torch.randn(4, 4, 7))
    for q in m._input_quantizers:
        q.amax = torch.tensor(2.5)
    calib.calibrate_weights(m, method="max")
    w_amax = [q.amax.clone() for q in m._weight_quantizers]
    assert w_amax[0].shape == (28, 1)
    in_amax = [torch.tensor(2.5)] * 4
    xr = x.clone().requires_grad_()
    xm = x.clone().requires_grad_()
    y, (h, c) = m(xm, hx)
    params_ref = [p.detach().clone().requires_grad_() for p in m.parameters()]
    ref_mod = quant_nn.QuantLSTM(5, 7, 2, bidirectional=True)
    with torch.no_grad():
        for p, src in zip(ref_mod.parameters(), params_ref):
            p.copy_(src)
    y_ref, (h_ref, c_ref) = _ref_lstm(ref_mod, xr, hx, in_amax, w_amax)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-6)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(xm.grad, xr.grad, rtol=0, atol=1e-5)
    for (name, p), p_ref in zip(m.named_parameters(), ref_mod.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=0, atol=1e-5, msg=name)


def test_packed_quantized_matches_padded_per_sequence():
    """A packed batch gives each sequence what it gets alone (quantizers on, calibrated)."""
    _, m = _pair(2, True, False, True)
    for q in m._input_quantizers:
        q.amax = torch.tensor(3.0)
    calib.calibrate_weights(m, method="max")
    x = torch.randn(6, 3, 5)
    lengths = [4, 6, 2]
    y, (h, c) = m(pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False))
    y, _ = pad_packed_sequence(y)
    for b, n in enumerate(lengths):
        y1, (h1, c1) = m(x[:n, b:b + 1])
        torch.testing.assert_close(y[:n, b:b + 1], y1, rtol=0, atol=1e-6)
        torch.testing.assert_close(h[:, b:b + 1], h1, rtol=0, atol=1e-6)
        torch.testing.assert_close(c[:, b:b + 1], c1, rtol=0, atol=1e-6)
        assert (y[n:, b] == 0).all()


def test_lstm_cell_matches_reference_and_disabled_equals_nn():
    ref = nn.LSTMCell(5, 7)
    cell = quant_nn.QuantLSTMCell.from_float(ref)
    x, hx = torch.randn(3, 5), (torch.randn(3, 7), torch.randn(3, 7))
    h, c = cell(x, hx)
    h_ref, c_ref = _ref_cell(x, *hx, ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh, None, None)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-6)
    _disable_all(cell)
    for args in ((x, hx), (x,), (x[0], (hx[0][0], hx[1][0]))):
        out, out_ref = cell(*args), ref(*args)
        assert torch.equal(out[0], out_ref[0]) and torch.equal(out[1], out_ref[1])


def test_calibration_sees_the_fused_step_input():
    m = quant_nn.QuantLSTM(5, 7)
    q = m._input_quantizers[0]
    q.disable_quant()
    q.enable_calib()
    x = torch.randn(4, 2, 5)
    x[2, 1, 3] = 9.0
    m(x)
    q.load_calib_amax()
    q.disable_calib()
    q.enable_quant()
    assert q.amax.item() == 9.0


def test_errors():
    with pytest.raises(ValueError, match="proj_size > 0"):
        quant_nn.QuantLSTM(4, 8, proj_size=2)
    with pytest.raises(ValueError, match="proj_size > 0"):
        quant_nn.QuantLSTM.from_float(nn.LSTM(4, 8, proj_size=2))
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        quant_nn.QuantLSTM(4, 8, dropout=1.5)
    with pytest.raises(TypeError, match="Unused keys"):
        quant_nn.QuantLSTM(4, 8, quant_desc_foo=1)
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        quant_nn.QuantLSTM(4, 8)(torch.randn(3, 2, 5))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 2, 8\)"):
        quant_nn.QuantLSTM(4, 8)(torch.randn(3, 2, 4), (torch.zeros(1, 3, 8), torch.zeros(1, 2, 8)))
    with pytest.raises(RuntimeError, match="inconsistent input_size"):
        quant_nn.QuantLSTMCell(4, 8)(torch.randn(2, 5))
    with pytest.raises(TypeError, match="from_float expects a torch.nn.LSTM"):
        quant_nn.QuantLSTM.from_float(nn.GRU(4, 8))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        quant_nn.QuantLSTM(4, 8, dropout=0.5)
    assert any("non-zero dropout expects num_layers greater than 1" in str(x.message) for x in w)


def test_custom_descriptors_and_quant_modules_map():
    m = quant_nn.QuantLSTM(4, 8, 2, quant_desc_input=QuantDescriptor(num_bits=6),
                           quant_desc_weight=QuantDescriptor(num_bits=4, axis=(0,)))
    assert all(q.num_bits == 6 for q in m._input_quantizers) and all(q.num_bits == 4 for q in m._weight_quantizers)
    names = {e.mod_name: e.replace_mod for e in quant_modules._DEFAULT_QUANT_MAP}
    assert names["LSTM"] is quant_nn.QuantLSTM and names["LSTMCell"] is quant_nn.QuantLSTMCell
    quant_modules.initialize()
    try:
        assert isinstance(nn.LSTM(4, 8), quant_nn.QuantLSTM) and isinstance(nn.LSTMCell(4, 8), quant_nn.QuantLSTMCell)
    finally:
        quant_modules.deactivate()
    assert nn.LSTM is torch.nn.modules.rnn.LSTM


class _Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 7, 2, bidirectional=True)
        self.cell = nn.LSTMCell(14, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        h, _ = self.cell(y[-1])
        return self.head(h)


def test_quantize_model_calibrate_and_checkpoint_roundtrip():
    model = _Seq()
    w_before = model.lstm.weight_ih_l0
    torchqat.quantize_model(model, {"quant_cfg": {"lstm._input_quantizers.1": {"enable": False}}})
    assert isinstance(model.lstm, quant_nn.QuantLSTM) and isinstance(model.cell, quant_nn.QuantLSTMCell)
    assert model.lstm.weight_ih_l0 is w_before  # parameters shared with the float layer
    assert model.lstm._input_quantizers[1]._disabled and not model.lstm._input_quantizers[0]._disabled
    x = torch.randn(6, 2, 5)
    torchqat.calibrate(model, [x])
    calib.calibrate_weights(model, method="max")
    assert model.lstm._weight_quantizers[3].amax.shape == (28, 1)
    expected = model(x)
    sd = model.state_dict()
    assert "lstm._input_quantizers.0._amax" in sd and "lstm._weight_quantizers.3._amax" in sd
    assert "cell._weight_quantizer._amax" in sd
    fresh = torchqat.quantize_model(_Seq())
    torchqat.load_state_dict(fresh, sd)
    fresh.lstm._input_quantizers[1].disable()
    assert torch.equal(fresh(x), expected)
    bad = dict(sd)
    bad["lstm._weight_quantizers.2._amax"] = torch.ones(27, 1)
    with pytest.raises(RuntimeError, match="does not fit the weight of shape \\(28, 21\\)"):
        torchqat.load_state_dict(torchqat.quantize_model(_Seq()), bad)
    buf = io.BytesIO()
    torch.save({"model": model}, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)["model"]
    assert torch.equal(again(x), expected)


class _Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 7, 2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(14, 3)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y)


def test_onnx_export_unrolls_with_qdq_and_matches_onnxruntime(tmp_path):
    """Exported as pytorch-quantization's is: one Q/DQ per step and direction on cat([x_t, h]), one
    per-row Q/DQ per fused weight, the cell as Gemm/Sigmoid/Tanh; ONNX Runtime agrees with the model."""
    import onnx
    import onnxruntime as ort
    from torchqat import onnx as tq_onnx

    model = torchqat.quantize_model(_Tagger())
    x = torch.randn(2, 6, 5)
    torchqat.calibrate(model, [x, torch.randn(2, 6, 5)], progress=False)
    model.eval()
    path = str(tmp_path / "lstm.onnx")
    proto = tq_onnx.export(model, (x,), path)
    ops = [n.op_type for n in proto.graph.node]
    assert "LSTM" not in ops and "Gemm" in ops and "Sigmoid" in ops
    steps_x_dirs = 6 * 4
    assert ops.count("QuantizeLinear") == steps_x_dirs + 4 + 2  # step inputs, LSTM weights, fc input + weight
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    axes = [next((a.i for a in n.attribute if a.name == "axis"), None) for n in proto.graph.node
            if n.op_type == "QuantizeLinear" and inits.get(n.input[1]) is not None and inits[n.input[1]].size == 28]
    assert axes == [0, 0, 0, 0]  # per-row scales of the fused [4*hidden, in + hidden] weights
    assert tq_onnx.lint_tensorrt(path) == []
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    step = min(float(q.amax) for q in model.lstm._input_quantizers) / 127
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=0, atol=step)
        assert (torch.from_numpy(got) - model(x)).abs().max() < 1e-5


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_calibrate_weights_uses_each_fused_weight(method):
    m = quant_nn.QuantLSTM(5, 7, 2, bidirectional=True)
    cell = quant_nn.QuantLSTMCell(5, 7)
    calib.calibrate_weights(nn.ModuleList([m, cell]), method=method)
    pairs = [(torch.cat(w[:2], 1), q) for w, q in zip(m.all_weights, m._weight_quantizers)]
    pairs.append((torch.cat([cell.weight_ih, cell.weight_hh], 1), cell._weight_quantizer))
    for w, q in pairs:
        assert q.amax.shape == (28, 1)
        if method == "max":
            assert torch.equal(q.amax, w.detach().abs().amax(1, keepdim=True))
        else:  # one histogram per row of the fused weight, as calib.HistogramCalibrator gives
            row = calib.HistogramCalibrator(8, None, False)
            row.collect(w.detach()[5])
            assert torch.equal(q.amax[5, 0], row.compute_amax("percentile", percentile=99.99))
