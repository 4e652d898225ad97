"""tools.sensitivity and partial_quantize on a model with a QuantLSTM: the LSTM's per-layer quantizer
lists (`_input_quantizers.<i>`, `_weight_quantizers.<i>`) make one layer, named as the LSTM, and
making it float replaces every one of them (checked against the model with those quantizers
disabled by hand)."""
import copy

import torch
from torch import nn

import torchqat
from torchqat import nn as quant_nn
from torchqat.tensor_quant import QuantDescriptor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = quant_nn.QuantLSTM(4, 6, num_layers=2, batch_first=True)
        self.fc = quant_nn.QuantLinear(6, 3)

    def forward(self, x):
        return self.fc(self.lstm(x)[0])


def _net():
    torch.manual_seed(0)
    net = Net().eval()
    # 3-bit LSTM quantizers: the LSTM is clearly the most sensitive layer.
    for q in list(net.lstm._input_quantizers) + list(net.lstm._weight_quantizers):
        q.num_bits = 3
    return net


X = torch.randn(2, 5, 4)


def _float_out(net):
    ref = copy.deepcopy(net)
    for q in ref.modules():
        if isinstance(q, quant_nn.TensorQuantizer):
            q.disable()
    with torch.no_grad():
        return ref(X)


def _eval(net, target):
    with torch.no_grad():
        return -float((net(X) - target).pow(2).mean())


def _disabled(net, prefix):
    m = copy.deepcopy(net)
    for name, q in m.named_modules():
        if isinstance(q, quant_nn.TensorQuantizer) and name.startswith(prefix):
            q.disable()
    return m


def test_lstm_quantizer_lists_are_one_layer():
    layers = dict(torchqat.tools.quantized_layers(_net()))
    assert set(layers) == {"lstm", "fc"}
    assert sorted(layers["lstm"]) == ["_input_quantizers.0", "_input_quantizers.1",
                                      "_weight_quantizers.0", "_weight_quantizers.1"]


def test_sensitivity_scores_the_lstm_as_a_whole_and_restores_it():
    net = _net()
    target = _float_out(net)
    before = net(X).detach()
    table = torchqat.tools.sensitivity(net, lambda m: _eval(m, target), mode="all_but_one")
    assert {r.layer for r in table} == {"lstm", "fc"}
    assert table.most_sensitive(1) == ["lstm"]
    row = next(r for r in table if r.layer == "lstm")
    assert row.score == _eval(_disabled(net, "lstm."), target)  # every LSTM quantizer float, fc quantized
    assert all(isinstance(q, quant_nn.TensorQuantizer) for q in net.lstm._input_quantizers)
    torch.testing.assert_close(net(X).detach(), before, rtol=0, atol=0)
    one = torchqat.tools.sensitivity(net, lambda m: _eval(m, target), mode="one_at_a_time")
    only_lstm = next(r for r in one if r.layer == "lstm")
    assert only_lstm.score == _eval(_disabled(net, "fc."), target)


def test_partial_quantize_disables_every_lstm_quantizer():
    net = _net()
    target = _float_out(net)
    names = torchqat.tools.partial_quantize(net, lambda m: _eval(m, target), n=1)
    assert names == ["lstm"]
    assert all(q._disabled for q in list(net.lstm._input_quantizers) + list(net.lstm._weight_quantizers))
    assert not net.fc._input_quantizer._disabled
