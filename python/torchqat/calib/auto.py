"""method="auto": for each activation quantizer, the calibration method whose amax costs its layer least.

The right method differs per layer (entropy clips an input dominated by one value, max spends the
range on one outlier), so auto tries them all on the same statistics and measures the result.

Definition. For an enabled per-tensor quantizer q with a histogram calibrator, the candidates are
the amax the C++ searches give on q's one histogram: max (percentile 100), percentile 99.9, 99.99
and 99.999, mse and entropy. For each candidate c, the error is

    E(c) = sum over the layers L that hold q, and over the recorded calls of L (the first
           `auto_batches` calibration batches),  || L_c(x) - L_ref(x) ||^2 / numel

where L_c runs with q quantizing at amax c and L_ref with q disabled; every other activation
quantizer of the model is disabled meanwhile and weight quantizers quantize with their calibrated
amax, so E(c) is the output error that q's own rounding and clipping cause in the layer that
consumes it. The candidate with the least E is kept (ties: the first in the order above). Under
torch.distributed (calibrate's sync) each rank measures its own batches and the errors are summed
across ranks, so every rank keeps the same candidate.
Per-channel quantizers (weights) and quantizers with max calibrators keep their running max.
"""
import dataclasses
import sys

import torch
import torch.distributed as dist

from . import _distributed
from .histogram import HistogramCalibrator

__all__ = ["AUTO_CANDIDATES", "AutoChoice", "AutoReport", "choose_amax", "InputRecorder"]

# (label, method, search arguments), in tie-breaking order.
AUTO_CANDIDATES = (
    ("mse", "mse", {}),
    ("max", "percentile", {"percentile": 100.0}),
    ("percentile 99.999", "percentile", {"percentile": 99.999}),
    ("percentile 99.99", "percentile", {"percentile": 99.99}),
    ("percentile 99.9", "percentile", {"percentile": 99.9}),
    ("entropy", "entropy", {}),
)


@dataclasses.dataclass
class AutoChoice:
    """The method auto kept for one quantizer, its amax, and every candidate's (amax, error)."""
    quantizer: str
    method: str
    amax: float
    errors: dict


@dataclasses.dataclass
class AutoReport:
    """The per-quantizer choices of calibrate(method="auto"), printable as a table."""
    choices: list

    def __iter__(self):
        return iter(self.choices)

    def __len__(self):
        return len(self.choices)

    def method_of(self, quantizer):
        """The method kept for the quantizer at that module path."""
        for c in self.choices:
            if c.quantizer == quantizer:
                return c.method
        raise KeyError(f"no auto choice for quantizer {quantizer!r}")

    def __str__(self):
        labels = [label for label, _, _ in AUTO_CANDIDATES]
        width = max([len("quantizer")] + [len(c.quantizer) for c in self.choices])
        lines = [f"{'quantizer':<{width}}  {'kept':<17} {'amax':>10}  " + "  ".join(f"{lb:>17}" for lb in labels)]
        for c in self.choices:
            errs = "  ".join(f"{c.errors[lb][1]:>17.4g}" if lb in c.errors else f"{'-':>17}" for lb in labels)
            lines.append(f"{c.quantizer:<{width}}  {c.method:<17} {c.amax:>10.4g}  {errs}")
        return "\n".join(lines)


def _holders(model, quantizer_type):
    """{id(quantizer): [module that holds it as a direct child]}."""
    holders = {}
    for _, parent in model.named_modules(remove_duplicate=False):
        for child in parent._modules.values():
            if isinstance(child, quantizer_type):
                lst = holders.setdefault(id(child), [])
                if all(p is not parent for p in lst):
                    lst.append(parent)
    return holders


class InputRecorder:
    """Records the inputs of every module holding a quantizer, for the first `batches` forwards of
    the model (up to `calls_per_batch` calls of each module per forward)."""

    def __init__(self, model, quantizer_type, batches=2, calls_per_batch=4):
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f"auto_batches must be an integer >= 1, got {batches!r}")
        self.model = model
        self.holders = _holders(model, quantizer_type)
        self.batches, self.calls_per_batch = batches, calls_per_batch
        self.records = {}  # id(module) -> [(args, kwargs)]
        self._handles = []
        self._forwards = 0
        self._calls = {}

    def __enter__(self):
        modules = {id(m): m for lst in self.holders.values() for m in lst}

        def pre(module, args, kwargs):
            if self._forwards >= self.batches or self._calls.get(id(module), 0) >= self.calls_per_batch:
                return
            self._calls[id(module)] = self._calls.get(id(module), 0) + 1
            keep = lambda v: v.detach().clone() if torch.is_tensor(v) else v  # noqa: E731
            self.records.setdefault(id(module), []).append(
                (torch.utils._pytree.tree_map(keep, args), torch.utils._pytree.tree_map(keep, kwargs)))

        def root_done(module, args, output):
            self._forwards += 1
            self._calls = {}

        for m in modules.values():
            self._handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        self._handles.append(self.model.register_forward_hook(root_done))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []


def _outputs(module, records):
    return [module(*a, **k) for a, k in records]


def _squared_error(outs, refs):
    total = 0.0
    for o, r in zip(outs, refs):
        for a, b in zip(torch.utils._pytree.tree_leaves(o), torch.utils._pytree.tree_leaves(r)):
            if torch.is_tensor(a) and a.is_floating_point():
                total += float(torch.sub(a.float(), b.float()).square().mean())
    return total


def choose_amax(model, recorder, quantizers, strict=True, progress=False, sync=False):
    """Sets the amax of every quantizer in `quantizers` [(name, q)] by the rule of this module's
    docstring, from its calibrator and the recorder's inputs; returns an AutoReport."""
    activations = [(n, q) for n, q in quantizers if isinstance(q.calibrator, HistogramCalibrator)]
    for _, q in quantizers:  # weights (and max calibrators) first: the errors are measured with them in place
        if not isinstance(q.calibrator, HistogramCalibrator):
            q.load_calib_amax(strict=strict)
    enabled = [q for _, q in activations]
    choices = []
    was_training = model.training
    model.eval()
    try:
        for q in enabled:
            q.disable()
        with torch.no_grad():
            for name, q in activations:
                choice = _choose_one(name, q, recorder, strict, sync)
                if choice is not None:
                    choices.append(choice)
    finally:
        for q in enabled:
            q.enable()
        model.train(was_training)
    report = AutoReport(choices)
    if progress and choices:
        print(f"calibrate(method='auto'): per-quantizer choice (errors: mean squared output error of the layer)\n"
              f"{report}", file=sys.stderr)
    return report


def _choose_one(name, q, recorder, strict, sync):
    cal = q.calibrator
    candidates, failures = {}, []
    for label, method, kw in AUTO_CANDIDATES:
        try:
            candidates[label] = cal.compute_amax(method, **kw)
        except (RuntimeError, ValueError) as e:  # e.g. no data, or too few bins for that search
            failures.append(f"{label}: {e}")
    if not candidates:
        if strict:
            raise RuntimeError(f"calibrating quantizer '{name}': no method gave an amax ({'; '.join(failures)})")
        return None
    layers = [(m, recorder.records.get(id(m), [])) for m in recorder.holders.get(id(q), [])]
    layers = [(m, r) for m, r in layers if r]
    refs = [_outputs(m, r) for m, r in layers]  # q is disabled here
    labels = list(candidates)
    errors = torch.zeros(len(labels), dtype=torch.float64)
    q.enable()
    try:
        for i, label in enumerate(labels):
            q.amax = candidates[label]
            errors[i] = sum(_squared_error(_outputs(m, r), ref) for (m, r), ref in zip(layers, refs))
    finally:
        q.disable()
    if sync:  # every rank measured its own batches: sum, so that all ranks keep the same candidate
        dev = _distributed.device()
        e = errors.to(dev)
        dist.all_reduce(e)
        errors = e.cpu()
    best = labels[int(torch.argmin(errors))]  # argmin returns the first minimum: the tie order above
    q.amax = candidates[best]
    return AutoChoice(name, best, float(candidates[best]),
                      {lb: (float(candidates[lb]), float(errors[i])) for i, lb in enumerate(labels)})
