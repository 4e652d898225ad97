"""Per-layer quantization sensitivity and partial quantization.

    table = torchqat.tools.sensitivity(model, eval_fn, mode="all_but_one", plot="sens.png")
    print(table)                               # ranked, most sensitive first
    torchqat.tools.partial_quantize(model, eval_fn, n=3)   # keep the 3 most sensitive layers float

A "layer" is a module that holds TensorQuantizers directly (QuantConv2d, QuantLinear, QuantAdd,
...) or in lists of quantizers (QuantLSTM's per-layer `_input_quantizers` / `_weight_quantizers`,
slots named like `_input_quantizers.0`) with at least one enabled. eval_fn(model) returns a number (higher is better unless
higher_is_better=False, e.g. for a loss); it is responsible for no_grad / eval mode.

- mode="one_at_a_time": only that layer quantized, the rest float. sensitivity = float score
  - score (YOLOv6's partial-quantization analysis).
- mode="all_but_one": every layer quantized except that one. sensitivity = score - fully
  quantized score: what keeping it float recovers (NVIDIA's YOLOv7 analysis).

A layer is made float for an evaluation by putting an identity in place of its quantizers, not
by disabling them, so quantizers shared with other layers (torchqat.placement.share_scales) stay
as they are for those layers; the model is restored afterwards, even if eval_fn raises.
"""
import copy
import dataclasses
import fnmatch
import math

import torch
from torch import nn

from ..nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["sensitivity", "partial_quantize", "quantized_layers", "SensitivityTable", "SensitivityRow"]

_MODES = ("one_at_a_time", "all_but_one")


def _is_quantizer_list(m):
    return isinstance(m, (nn.ModuleList, nn.ModuleDict)) and len(m) > 0 and \
        all(isinstance(q, TensorQuantizer) for q in m._modules.values())


def _quantizer_slots(m):
    """[(slot name, holder module, key)] of the TensorQuantizers m holds directly or in a list of
    quantizers (QuantLSTM's `_input_quantizers.<i>`)."""
    out = []
    for a, c in m._modules.items():
        if isinstance(c, TensorQuantizer):
            out.append((a, m, a))
        elif _is_quantizer_list(c):
            out.extend((f"{a}.{k}", c, k) for k in c._modules)
    return out


def _slot(m, attr):
    """(holder, key) of slot attr of layer m."""
    holder_path, _, key = attr.rpartition(".")
    return (m.get_submodule(holder_path) if holder_path else m), key


def quantized_layers(model):
    """[(name, [quantizer slot names])] of the modules holding enabled TensorQuantizers directly or in
    lists of quantizers (a list itself is part of the module that holds it, not a layer)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, TensorQuantizer) or _is_quantizer_list(m):
            continue
        slots = _quantizer_slots(m)
        if slots and any(not h._modules[k].disabled for _, h, k in slots):
            out.append((name, [a for a, _, _ in slots]))
    return out


@dataclasses.dataclass
class SensitivityRow:
    rank: int
    layer: str
    score: float
    sensitivity: float

    def as_dict(self):
        """The row as a plain dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SensitivityTable:
    """Ranked results: rows[0] is the most sensitive layer."""
    mode: str
    float_score: float
    quant_score: float
    rows: list
    higher_is_better: bool = True

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def most_sensitive(self, n):
        """The names of the n layers whose quantization costs most."""
        return [r.layer for r in self.rows[:n]]

    def to_dicts(self):
        """Every row as a plain dict, ranked."""
        return [r.as_dict() for r in self.rows]

    def __str__(self):
        what = "only this layer quantized" if self.mode == "one_at_a_time" else "all layers but this quantized"
        width = max([len("layer")] + [len(r.layer) for r in self.rows])
        lines = [f"sensitivity ({self.mode}: score with {what}); float {self.float_score:.6g}, "
                 f"fully quantized {self.quant_score:.6g}",
                 f"{'rank':>4}  {'layer':<{width}}  {'score':>12}  {'sensitivity':>12}"]
        for r in self.rows:
            lines.append(f"{r.rank:>4}  {r.layer:<{width}}  {r.score:>12.6g}  {r.sensitivity:>12.6g}")
        return "\n".join(lines)


class _FloatLayers:
    """Context manager: the named layers' quantizer slots hold nn.Identity while inside."""

    def __init__(self, model, layers):
        self.model, self.layers, self.saved = model, layers, []

    def __enter__(self):
        for name, attrs in self.layers:
            m = self.model.get_submodule(name)
            for a in attrs:
                holder, key = _slot(m, a)
                self.saved.append((holder, key, holder._modules[key]))
                holder._modules[key] = nn.Identity()
        return self

    def __exit__(self, *exc):
        for m, a, q in reversed(self.saved):
            m._modules[a] = q
        self.saved = []
        return False


def _score(eval_fn, model):
    value = eval_fn(model)
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"eval_fn must return one number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"eval_fn must return a number, got {type(value).__name__}") from e


def _select(layers, patterns):
    if patterns is None:
        return layers
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen = [(n, a) for n, a in layers if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"sensitivity: layers={patterns!r} matches no quantized layer "
                         f"(quantized layers: {[n for n, _ in layers][:10]}...)")
    return chosen


def sensitivity(model, eval_fn, mode="one_at_a_time", plot=None, *, layers=None, higher_is_better=True):
    """Ranks the quantized layers of `model` by how much their quantization costs; returns a SensitivityTable.

    layers: names or fnmatch patterns restricting the layers analysed (default: all).
    plot: a path; writes a bar chart PNG there (matplotlib, Agg canvas).
    """
    if mode not in _MODES:
        raise ValueError(f"sensitivity: mode must be one of {list(_MODES)}, got {mode!r}")
    if not callable(eval_fn):
        raise TypeError(f"sensitivity: eval_fn must be callable, got {type(eval_fn).__name__}")
    all_layers = quantized_layers(model)
    if not all_layers:
        raise ValueError("sensitivity: the model has no enabled quantizers (quantize it first)")
    chosen = _select(all_layers, layers)

    quant_score = _score(eval_fn, model)
    with _FloatLayers(model, all_layers):
        float_score = _score(eval_fn, model)
    sign = 1.0 if higher_is_better else -1.0
    rows = []
    for name, attrs in chosen:
        if mode == "one_at_a_time":
            others = [(n, a) for n, a in all_layers if n != name]
            with _FloatLayers(model, others):
                s = _score(eval_fn, model)
            sens = sign * (float_score - s)
        else:
            with _FloatLayers(model, [(name, attrs)]):
                s = _score(eval_fn, model)
            sens = sign * (s - quant_score)
        rows.append(SensitivityRow(0, name, s, sens))
    rows.sort(key=lambda r: (-r.sensitivity if not math.isnan(r.sensitivity) else math.inf))
    for i, r in enumerate(rows):
        r.rank = i + 1
    table = SensitivityTable(mode, float_score, quant_score, rows, higher_is_better)
    if plot is not None:
        write_plot(table, plot)
    return table


def write_plot(table, path):
    """A horizontal bar chart of the table (most sensitive on top) as a PNG at `path`."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("sensitivity(plot=...) needs matplotlib: pip install matplotlib") from e
    rows = list(table.rows)
    fig = Figure(figsize=(8, max(2.0, 0.28 * len(rows) + 1.2)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(rows)), [r.sensitivity for r in rows], color="tab:red")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.layer for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("sensitivity (" + ("float - only this quantized" if table.mode == "one_at_a_time"
                                      else "all but this quantized - all quantized") + ")")
    ax.set_title(f"quantization sensitivity ({table.mode}); float {table.float_score:.4g}, "
                 f"quantized {table.quant_score:.4g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=100)
    return path


def partial_quantize(model, eval_fn=None, n=1, mode="all_but_one", *, table=None, **kwargs):
    """Keeps the n most sensitive layers float (their quantizers disabled); returns their names.

    table: a SensitivityTable from an earlier sensitivity() call (then eval_fn is not needed);
    otherwise sensitivity(model, eval_fn, mode, **kwargs) is run. A quantizer the layer shares
    with other layers is replaced, in that layer only, by a disabled copy, so the others stay
    quantized.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"partial_quantize: n must be an integer >= 0, got {n!r}")
    if table is None:
        if eval_fn is None:
            raise ValueError("partial_quantize: give eval_fn or a table from sensitivity()")
        table = sensitivity(model, eval_fn, mode, **kwargs)
    names = table.most_sensitive(n)
    holders = {}
    for parent_name, parent in model.named_modules(remove_duplicate=False):
        if isinstance(parent, TensorQuantizer) or _is_quantizer_list(parent):
            continue
        for _, h, k in _quantizer_slots(parent):
            holders.setdefault(id(h._modules[k]), set()).add(parent_name)
    for name in names:
        m = model.get_submodule(name)
        copies = {}
        for _, h, k in _quantizer_slots(m):
            q = h._modules[k]
            if holders.get(id(q), {name}) - {name}:  # shared with another layer: give this one its own
                if id(q) not in copies:
                    copies[id(q)] = copy.deepcopy(q)
                    copies[id(q)].disable()
                h._modules[k] = copies[id(q)]
            else:
                q.disable()
    return names
