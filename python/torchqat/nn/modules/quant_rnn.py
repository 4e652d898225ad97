"""Quantized LSTM and LSTMCell, with pytorch-quantization's constructor, quantizers and state-dict keys.

As in pytorch-quantization, each layer x direction `l` of a QuantLSTM has one input quantizer,
`_input_quantizers[l]`, applied at every time step to the fused activation cat([x_t, h_{t-1}], 1),
and one per-row weight quantizer, `_weight_quantizers[l]`, applied to the fused weight
cat([W_ih, W_hh], 1) (amax of shape [4*hidden_size, 1]): the layout of one fused GEMM per step.
QuantLSTMCell has the single pair `_input_quantizer` / `_weight_quantizer`.

The quantizers are torchqat's ops; the recurrence is torch's own: with every input quantizer
bypassed the whole stack runs as one torch.lstm call (the op nn.LSTM calls, so a model with
disabled quantizers equals nn.LSTM bit for bit), otherwise each step is a torch.lstm_cell on the
quantized step input and hidden state (h must be quantized between steps, which the fused op
cannot do). Parameters have nn.LSTM's names and order, so nn.LSTM state dicts load.
"""
import math
import numbers
import warnings

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

from ... import tensor_quant
from . import _utils

__all__ = ["QuantRNNBase", "QuantLSTM", "QuantRNNCellBase", "QuantLSTMCell", "LSTM", "LSTMCell"]


def _is_bypassed(quantizer):
    """True when the quantizer returns its input unchanged (so it can be skipped); an nn.Identity in
    the slot (how tools.sensitivity makes a layer float) is one too."""
    if isinstance(quantizer, torch.nn.Identity):
        return True
    if getattr(quantizer, "_pre_quant_scale", None) is not None:
        return False
    return quantizer.disabled or not (quantizer.if_quant or quantizer.if_calib)


def _quant_pair(quantizer, a, b):
    """quantizer(cat([a, b], 1)) split back into a's and b's columns."""
    if _is_bypassed(quantizer):
        return a, b
    return quantizer(torch.cat([a, b], 1)).split([a.size(1), b.size(1)], 1)


def _check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")


def _step_fn(input_quantizer, w_ih, w_hh, b_ih, b_hh):
    def step(x, h, c):
        xq, hq = _quant_pair(input_quantizer, x, h)
        return torch.lstm_cell(xq, (hq, c), w_ih, w_hh, b_ih, b_hh)
    return step


def _run_dense(x, h, c, step, reverse):
    """One direction over time-major x [T, B, I]: (outputs [T, B, H], (h_T, c_T))."""
    outs = []
    for t in (range(x.size(0) - 1, -1, -1) if reverse else range(x.size(0))):
        h, c = step(x[t], h, c)
        outs.append(h)
    if reverse:
        outs.reverse()
    return torch.stack(outs, 0), (h, c)


def _run_packed(data, batch_sizes, h0, c0, step, reverse):
    """One direction over packed data [sum(batch_sizes), I] (sequences sorted by decreasing length)."""
    outs = []
    if not reverse:
        offset, last, done = 0, batch_sizes[0], []
        h, c = h0, c0
        for b in batch_sizes:
            if b < last:  # sequences b..last-1 have ended: keep their final state
                done.append((h[b:last], c[b:last]))
                h, c = h[:b], c[:b]
            last = b
            h, c = step(data[offset:offset + b], h, c)
            offset += b
            outs.append(h)
        done.append((h, c))
        done.reverse()
        return torch.cat(outs, 0), (torch.cat([d[0] for d in done], 0), torch.cat([d[1] for d in done], 0))
    offset, last = data.size(0), batch_sizes[-1]
    h, c = h0[:last], c0[:last]
    for b in reversed(batch_sizes):
        if b > last:  # sequences last..b-1 start here (at their end): from their initial state
            h, c = torch.cat([h, h0[last:b]], 0), torch.cat([c, c0[last:b]], 0)
        last = b
        h, c = step(data[offset - b:offset], h, c)
        offset -= b
        outs.append(h)
    outs.reverse()
    return torch.cat(outs, 0), (h, c)


class QuantRNNBase(nn.Module, _utils.QuantMixin):
    """Multi-layer quantized RNN; only mode 'LSTM' is quantized (as in pytorch-quantization)."""

    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None, **kwargs):
        super().__init__()
        if mode != "LSTM":
            raise ValueError(f"QuantRNNBase: mode must be 'LSTM' (the only quantized RNN), got {mode!r}")
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        _check_size("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             f"element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers=1")
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"proj_size should be a positive integer or zero to disable projections, "
                             f"got {proj_size!r}")
        if proj_size > 0:
            raise ValueError(f"{type(self).__name__}: proj_size > 0 (LSTM with projections) is not supported, "
                             f"got proj_size={proj_size}")
        desc_in, desc_w = _utils.pop_quant_desc_in_kwargs(self.__class__, **kwargs)
        _utils.check_weight_axis(self, desc_w, 2)
        _utils.check_input_axis(self, desc_in, 2)

        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        gate_size = 4 * hidden_size
        factory = {"device": device, "dtype": dtype}
        self._all_weights = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else hidden_size * num_directions
                suffix = "_reverse" if direction == 1 else ""
                names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                shapes = [(gate_size, layer_input), (gate_size, hidden_size)]
                if bias:
                    names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
                    shapes += [(gate_size,), (gate_size,)]
                for name, shape in zip(names, shapes):
                    setattr(self, name, nn.Parameter(torch.empty(shape, **factory)))
                self._all_weights.append(names)
        self.reset_parameters()
        self.init_quantizer(desc_in, desc_w, num_layers=num_layers * num_directions)

    def reset_parameters(self):
        """nn.LSTM's initialisation: every parameter uniform in [-1/sqrt(hidden_size), 1/sqrt(hidden_size)]."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self):
        """A no-op kept for nn.LSTM scripts: the weights are quantized anew each forward, never cuDNN-packed."""

    @property
    def all_weights(self):
        """The weights and biases of every layer and direction, as torch.nn.LSTM's."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def _quant_weights(self):
        """(quantizer name, the tensor it quantizes, quantizer, channel axis) per weight quantizer."""
        return [(f"_weight_quantizers.{l}", torch.cat([w[0], w[1]], 1), q, 0)
                for l, (w, q) in enumerate(zip(self.all_weights, self._weight_quantizers))]

    def _layer_weights(self, l):
        w = self.all_weights[l]
        w_ih, w_hh = _quant_pair(self._weight_quantizers[l], w[0], w[1])
        return [w_ih, w_hh] + list(w[2:])

    def _check_hidden(self, hx, batch):
        expected = (self.num_layers * (2 if self.bidirectional else 1), batch, self.hidden_size)
        for i, t in enumerate(hx):
            if tuple(t.shape) != expected:
                raise RuntimeError(f"Expected hidden[{i}] size {expected}, got {list(t.shape)}")

    def forward(self, input, hx=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            batch = int(batch_sizes[0])
            batched = True
        else:
            data, batch_sizes, sorted_indices, unsorted_indices = input, None, None, None
            if input.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not batched:
                data = input.unsqueeze(batch_dim)
            batch = data.size(batch_dim)
        if data.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {data.size(-1)}")
        num_directions = 2 if self.bidirectional else 1
        if hx is None:
            zeros = torch.zeros(self.num_layers * num_directions, batch, self.hidden_size, dtype=data.dtype,
                                device=data.device)
            hx = (zeros, zeros)
        else:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(torch.is_tensor(t) for t in hx)):
                raise TypeError(f"{type(self).__name__}: hx must be a tuple (h_0, c_0) of tensors")
            if not batched:
                if hx[0].dim() != 2 or hx[1].dim() != 2:
                    raise RuntimeError(f"For unbatched 2-D input, hx and cx should also be 2-D but got "
                                       f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            if sorted_indices is not None:
                hx = (hx[0].index_select(1, sorted_indices), hx[1].index_select(1, sorted_indices))
            self._check_hidden(hx, batch)

        L = self.num_layers * num_directions
        weights = [self._layer_weights(l) for l in range(L)]
        if all(_is_bypassed(q) for q in self._input_quantizers):
            flat = [w for ws in weights for w in ws]
            if packed:
                output, h, c = torch.lstm(data, batch_sizes, tuple(hx), flat, self.bias, self.num_layers,
                                          self.dropout, self.training, self.bidirectional)
            else:
                output, h, c = torch.lstm(data, tuple(hx), flat, self.bias, self.num_layers, self.dropout,
                                          self.training, self.bidirectional, self.batch_first)
        else:
            output, h, c = self._stepwise(data, batch_sizes, hx, weights)

        if packed:
            if unsorted_indices is not None:
                h, c = h.index_select(1, unsorted_indices), c.index_select(1, unsorted_indices)
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), (h, c)
        if not batched:
            output, h, c = output.squeeze(batch_dim), h.squeeze(1), c.squeeze(1)
        return output, (h, c)

    def _stepwise(self, data, batch_sizes, hx, weights):
        """The stack step by step, each direction's input quantizer applied at every step."""
        num_directions = 2 if self.bidirectional else 1
        sizes = None if batch_sizes is None else batch_sizes.tolist()  # batch_sizes lives on the CPU
        x = data.transpose(0, 1) if (sizes is None and self.batch_first) else data
        hn, cn = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(num_directions):
                l = layer * num_directions + d
                w = weights[l]
                step = _step_fn(self._input_quantizers[l], w[0], w[1], *(w[2:] if self.bias else (None, None)))
                if sizes is None:
                    out, (h, c) = _run_dense(x, hx[0][l], hx[1][l], step, reverse=d == 1)
                else:
                    out, (h, c) = _run_packed(x, sizes, hx[0][l], hx[1][l], step, reverse=d == 1)
                outs.append(out)
                hn.append(h)
                cn.append(c)
            x = outs[0] if num_directions == 1 else torch.cat(outs, -1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        if sizes is None and self.batch_first:
            x = x.transpose(0, 1)
        return x, torch.stack(hn, 0), torch.stack(cn, 0)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class QuantLSTM(QuantRNNBase):
    """nn.LSTM with per-layer x direction input and per-row weight quantizers (proj_size must be 0)."""

    _float_module = nn.LSTM

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    @classmethod
    def from_float(cls, module, quant_desc_input=None, quant_desc_weight=None):
        """A quantized copy of a float nn.LSTM, parameters copied (not shared)."""
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"{cls.__name__}.from_float expects a torch.nn.LSTM, got {type(module).__name__}")
        ref = next(module.parameters())
        q = cls(module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first,
                module.dropout, module.bidirectional, proj_size=module.proj_size, device=ref.device, dtype=ref.dtype,
                **_utils.quant_desc_kwargs(quant_desc_input, quant_desc_weight))
        _copy_parameters(module, q)
        q.to(ref.device)
        q.train(module.training)
        return q


class QuantRNNCellBase(nn.Module, _utils.QuantMixin):
    """Base of the quantized RNN cells: input checks and the per-row weight default."""

    default_quant_desc_weight = tensor_quant.QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        return s

    def check_forward_input(self, input):
        """Checks the input's size against input_size (torch.nn's message)."""
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(-1)}, expected {self.input_size}")

    def check_forward_hidden(self, input, hx, hidden_label=""):
        """Checks a hidden state's batch and size (torch.nn's message)."""
        if input.size(0) != hx.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{hidden_label} batch size "
                               f"{hx.size(0)}")
        if hx.size(1) != self.hidden_size:
            raise RuntimeError(f"hidden{hidden_label} has inconsistent hidden_size: got {hx.size(1)}, "
                               f"expected {self.hidden_size}")


class QuantLSTMCell(QuantRNNCellBase):
    """nn.LSTMCell with one input quantizer on cat([x, h]) and one per-row weight quantizer on cat([W_ih, W_hh])."""

    _float_module = nn.LSTMCell

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, **kwargs):
        super().__init__()
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        desc_in, desc_w = _utils.pop_quant_desc_in_kwargs(self.__class__, **kwargs)
        _utils.check_weight_axis(self, desc_w, 2)
        _utils.check_input_axis(self, desc_in, 2)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()
        self.init_quantizer(desc_in, desc_w)

    def reset_parameters(self):
        """torch.nn's initialisation: uniform in +-1/sqrt(hidden_size)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def _quant_weights(self):
        return [("_weight_quantizer", torch.cat([self.weight_ih, self.weight_hh], 1), self._weight_quantizer, 0)]

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"QuantLSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        self.check_forward_input(x)
        if hx is None:
            zeros = torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
            hx = (zeros, zeros)
        else:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(torch.is_tensor(t) for t in hx)):
                raise TypeError("QuantLSTMCell: hx must be a tuple (h_0, c_0) of tensors")
            hx = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        self.check_forward_hidden(x, hx[0], "[0]")
        self.check_forward_hidden(x, hx[1], "[1]")
        w_ih, w_hh = _quant_pair(self._weight_quantizer, self.weight_ih, self.weight_hh)
        xq, hq = _quant_pair(self._input_quantizer, x, hx[0])
        h, c = torch.lstm_cell(xq, (hq, hx[1]), w_ih, w_hh, self.bias_ih, self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    @classmethod
    def from_float(cls, module, quant_desc_input=None, quant_desc_weight=None):
        """A quantized copy of a float nn.LSTMCell, parameters copied (not shared)."""
        if not isinstance(module, nn.LSTMCell):
            raise TypeError(f"{cls.__name__}.from_float expects a torch.nn.LSTMCell, got {type(module).__name__}")
        ref = module.weight_ih
        q = cls(module.input_size, module.hidden_size, module.bias, device=ref.device, dtype=ref.dtype,
                **_utils.quant_desc_kwargs(quant_desc_input, quant_desc_weight))
        _copy_parameters(module, q)
        q.to(ref.device)
        q.train(module.training)
        return q


def _copy_parameters(src, dst):
    for name, p in src.named_parameters(recurse=False):
        setattr(dst, name, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))


LSTM = QuantLSTM
LSTMCell = QuantLSTMCell
