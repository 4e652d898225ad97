"""Scale sharing for TensorRT: make the quantizers TensorRT needs on one scale the same object.

TensorRT (explicit quantization) removes a Concat by letting its producers write into the
output buffer, runs MaxPool in int8 between Q/DQ ("commuting" op) and fuses a residual add into
the conv, but only when the scales match: otherwise it inserts int8<->fp16 reformat layers
(NVIDIA's YOLOv7 QAT reference: 180 qps with naive insertion, 207 qps with these rules).
`share_scales` applies those rules the way NVIDIA's reference does it
(`sub._input_quantizer = major._input_quantizer`), so calibration and QAT see one amax.

Rules (each groups tensors into one "scale domain"; every enabled per-tensor quantizer that
reads a tensor of the domain is made one object):
- concat:  a torch.cat / QuantConcat output and all its inputs. So the convs reading the concat,
           and the convs reading a concat input directly (ELAN), share one scale.
- maxpool: a MaxPool's input and output, when the output's domain is quantized. So the conv
           after the MaxPool and the parallel conv on the MaxPool's input (YOLOv7 MP block) share;
           SPPCSPC's identity + 5/9/13 maxpools come out on one scale through the concat rule.
           Nearest upsampling, Identity/Dropout and reshapes (view, flatten, permute, ...) pass
           scales through the same way.
- add:     both inputs of an add (operator/torch add or a QuantAdd): a QuantAdd's two
           quantizers and the quantizers of the other readers of its inputs share (NVIDIA's
           YOLOv5 Bottleneck rule).

- residual: an add whose one operand comes from a quantized weighted layer (through BN and
           activations) and whose other operand is a skip branch gets a quantizer on the skip
           operand (torchqat.residual; needs example_inputs).

Graph: with example_inputs, a recorded run of the model (torchqat.capture.record): any model that
runs is captured, Python control flow included, with module identity kept. Without them, torch.fx
symbolic tracing (no input needed); its limit is data-dependent Python control flow: when tracing
into a submodule fails (e.g. a YOLO detect head that compares tensor shapes), that submodule is
treated as an opaque leaf and tracing starts again (reported in `leaf_modules`); tensors inside a
leaf are not seen. Pass `leaf_modules` yourself to skip that retry. Quantized modules
(QuantConv2d, QuantAdd, ...) are always leaves.
"""
import copy
import dataclasses
import operator

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

from . import capture, residual
from .capture import Node
from .nn.modules._utils import QuantInputMixin, QuantMixin
from .nn.modules.quant_add import QuantAdd, QuantConcat
from .nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["share_scales", "trace", "shared_quantizers", "ScaleGroup", "SharingReport"]

_RULES = ("concat", "maxpool", "add", "residual")
_MAX_AUTO_LEAVES = 64

_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__", "__radd__"}
_MAXPOOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, torch.max_pool1d, torch.max_pool2d,
                      torch.max_pool3d}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
                      F.dropout}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "contiguous", "permute", "transpose", "squeeze", "unsqueeze",
                    "view_as", "reshape_as"}
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Flatten, nn.Unflatten)
_MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


@dataclasses.dataclass
class ScaleGroup:
    """Quantizers made one object: `members` (quantizer paths) now all are `major`'s quantizer."""
    major: str
    members: list
    rules: tuple
    tensors: list
    quantizer: TensorQuantizer = dataclasses.field(repr=False, compare=False)


@dataclasses.dataclass
class SharingReport:
    """What share_scales did: the groups, the quantizers it left alone (and why), the fx leaves it chose,
    the residual skip quantizers (torchqat.residual.SkipQuantizer) it added or found."""
    groups: list
    skipped: list
    leaf_modules: list
    applied: bool = True
    skip_quantizers: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.groups)

    def __iter__(self):
        return iter(self.groups)

    def group_of(self, quantizer_path):
        """The group holding a quantizer path like 'elan.out.conv._input_quantizer', or None."""
        for g in self.groups:
            if quantizer_path in g.members:
                return g
        return None

    def __str__(self):
        lines = [f"share_scales: {len(self.groups)} groups, "
                 f"{sum(len(g.members) for g in self.groups)} quantizers"
                 + ("" if self.applied else " (dry run, nothing changed)")]
        for i, g in enumerate(self.groups):
            lines.append(f"  [{i}] {'+'.join(g.rules)}: {g.major}")
            lines.extend(f"        = {m}" for m in g.members if m != g.major)
        for sk in self.skip_quantizers:
            lines.append(f"  residual {sk}")
        for path, reason in self.skipped:
            lines.append(f"  skipped {path}: {reason}")
        if self.leaf_modules:
            lines.append(f"  traced as opaque leaves: {', '.join(self.leaf_modules)}")
        return "\n".join(lines)


class _Tracer(fx.Tracer):
    def __init__(self, leaf_names, leaf_types):
        super().__init__()
        self._leaf_names = set(leaf_names)
        self._leaf_types = tuple(leaf_types)

    def is_leaf_module(self, m, module_qualified_name):
        if module_qualified_name in self._leaf_names or (self._leaf_types and isinstance(m, self._leaf_types)):
            return True
        if isinstance(m, (TensorQuantizer, QuantInputMixin, QuantMixin)):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as e:
            # Remember the innermost module whose forward could not be traced.
            if getattr(e, "_torchqat_failed_module", None) is None:
                try:
                    name = self.path_of_module(m)
                except Exception:
                    name = None
                if name and not self.is_leaf_module(m, name):
                    try:
                        e._torchqat_failed_module = name
                    except Exception:
                        pass
            raise


def trace(model, leaf_modules=()):
    """(fx.Graph of model, names of the submodules made leaves after a failed trace).

    leaf_modules: module names (str) or classes not to trace into.
    """
    names = {m for m in leaf_modules if isinstance(m, str)}
    types = tuple(m for m in leaf_modules if isinstance(m, type))
    bad = [m for m in leaf_modules if not isinstance(m, (str, type))]
    if bad:
        raise TypeError(f"leaf_modules must hold module names or classes, got {bad!r}")
    auto = []
    for _ in range(_MAX_AUTO_LEAVES + 1):
        tracer = _Tracer(names, types)
        try:
            return tracer.trace(model), auto
        except Exception as e:
            failed = getattr(e, "_torchqat_failed_module", None)
            if failed is None or failed in names or len(auto) >= _MAX_AUTO_LEAVES:
                raise RuntimeError(
                    f"torchqat: torch.fx could not trace {type(model).__name__}"
                    + (f" (failed inside {failed!r})" if failed else " (failed in its own forward)")
                    + f": {type(e).__name__}: {e}. Move the data-dependent code into a submodule and pass its "
                    "name in leaf_modules, or give share_scales example_inputs (a recorded run has no such "
                    "limit).") from e
            names.add(failed)
            auto.append(failed)
    raise AssertionError("unreachable")


class _UnionFind:
    def __init__(self):
        self.parent = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
        return ra


@dataclasses.dataclass
class _Site:
    owner: str       # module path of the module holding the quantizer attribute
    attr: str        # attribute name, e.g. "_input_quantizer"
    node: Node       # the tensor it quantizes
    order: int

    @property
    def path(self):
        return f"{self.owner}.{self.attr}" if self.owner else self.attr


def _arg(node, i, name):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name)


def _sites(graph, modules):
    """Every place a quantizer reads a tensor: (owner module path, attribute, node)."""
    sites = []
    for order, n in enumerate(graph.nodes):
        if n.op != "call_module":
            continue
        m = modules[n.target]
        if isinstance(m, TensorQuantizer):
            owner, attr = n.owner
            x = _arg(n, 0, "inputs")
            if isinstance(x, Node):
                sites.append(_Site(owner, attr, x, order))
        elif isinstance(m, QuantAdd):
            for i, attr in enumerate(("_input0_quantizer", "_input1_quantizer")):
                x = _arg(n, i, "xy"[i])
                if isinstance(x, Node):
                    sites.append(_Site(n.target, attr, x, order))
        elif isinstance(m, QuantConcat):
            xs = _arg(n, 0, "tensors")
            for x in (xs if isinstance(xs, (list, tuple)) else [xs]):
                if isinstance(x, Node):
                    sites.append(_Site(n.target, "_input_quantizer", x, order))
        elif isinstance(m, (QuantInputMixin, QuantMixin)) and isinstance(getattr(m, "_input_quantizer", None), TensorQuantizer):
            x = _arg(n, 0, "input")
            if isinstance(x, Node):
                sites.append(_Site(n.target, "_input_quantizer", x, order))
    return sites


def _classify(n, modules):
    """('concat', inputs) | ('add', (a, b)) | ('maxpool', x) | ('pass', x) | None for one node."""
    if n.op == "call_function":
        if n.target in _CAT_FUNCTIONS:
            return "concat", _arg(n, 0, "tensors")
        if n.target in _ADD_FUNCTIONS:
            return "add", (_arg(n, 0, "input"), _arg(n, 1, "other"))
        if n.target in _MAXPOOL_FUNCTIONS:
            return "maxpool", _arg(n, 0, "input")
        if n.target is F.interpolate:
            mode = _arg(n, 3, "mode")
            return ("pass", _arg(n, 0, "input")) if mode in (None, "nearest") else None
        if n.target in _RESHAPE_FUNCTIONS:
            return "pass", _arg(n, 0, "input")
    elif n.op == "call_method":
        if n.target in _ADD_METHODS:
            return "add", (_arg(n, 0, "self"), _arg(n, 1, "other"))
        if n.target in _RESHAPE_METHODS:
            return "pass", _arg(n, 0, "self")
    elif n.op == "call_module":
        m = modules[n.target]
        if isinstance(m, QuantConcat):
            return "concat", _arg(n, 0, "tensors")
        if isinstance(m, QuantAdd):
            return "add", (_arg(n, 0, "x"), _arg(n, 1, "y"))
        if isinstance(m, _MAXPOOL_MODULES) and not getattr(m, "return_indices", False):
            return "maxpool", _arg(n, 0, "input")
        if isinstance(m, nn.Upsample) and m.mode == "nearest":
            return "pass", _arg(n, 0, "input")
        if isinstance(m, _PASS_MODULES):
            return "pass", _arg(n, 0, "input")
    return None


_SHARED_ATTRS = ("_num_bits", "_unsigned", "_narrow_range", "_fake_quant", "_learn_amax", "_scale_amax", "_axis")


def _signature(q):
    return tuple(getattr(q, attr, None) for attr in _SHARED_ATTRS)


def _majority(eligible):
    """The (site, quantizer) whose settings most members share, so one odd quantizer is left out
    rather than everyone else; on a tie the wider one (more bits keeps accuracy), then the earliest."""
    counts = {}
    for _, q in eligible:
        counts[_signature(q)] = counts.get(_signature(q), 0) + 1
    return max(eligible, key=lambda sq: (counts[_signature(sq[1])], sq[1].num_bits, -sq[0].order))


def _compatible(q, major):
    for attr in _SHARED_ATTRS:
        if getattr(q, attr, None) != getattr(major, attr, None):
            return f"{attr.lstrip('_')} {getattr(q, attr, None)!r} differs from the group's {getattr(major, attr, None)!r}"
    return None


def shared_quantizers(model):
    """[[quantizer paths...]] of every TensorQuantizer object reachable under more than one name."""
    seen = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, TensorQuantizer):
            seen.setdefault(id(m), []).append(name)
    return [names for names in seen.values() if len(names) > 1]


def share_scales(model, example_inputs=None, *, rules=_RULES, leaf_modules=(), dry_run=False):
    """Makes the quantizers TensorRT needs on one scale a single TensorQuantizer object; returns a SharingReport.

    model: a quantized model (quantize_model / quant_modules first). Only enabled per-tensor
      quantizers join groups; disabled (float) or per-channel ones are listed in `skipped`.
    example_inputs: a tensor, a tuple of arguments or a dict of keyword arguments. When given,
      the graph is a recorded run of the model (torchqat.capture.record: works on any model that
      runs, Python control flow included); without, a torch.fx trace.
    rules: a subset of ("concat", "maxpool", "add", "residual"); leave "residual" out to put no
      quantizer on residual skip operands (it needs example_inputs; without them it is reported
      in `skipped` and not applied).
    leaf_modules: module names or classes fx does not trace into (fx only).
    dry_run: report the groups (and the skip quantizers it would add) without changing the model.

    If quantizers in a group were calibrated already, the shared one keeps the largest amax.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"share_scales: model must be an nn.Module, got {type(model).__name__}")
    rules = (rules,) if isinstance(rules, str) else tuple(rules)
    unknown = [r for r in rules if r not in _RULES]
    if unknown:
        raise ValueError(f"share_scales: unknown rules {unknown}; choose from {list(_RULES)}")

    if dry_run:  # what it would do is what it does to a copy
        report = share_scales(copy.deepcopy(model), example_inputs, rules=rules, leaf_modules=leaf_modules)
        report.applied = False
        return report
    graph, auto_leaves = capture_graph(model, example_inputs, leaf_modules)
    skips, skipped = [], []
    if "residual" in rules:
        if graph.source != "record":
            skipped.append(("residual adds", "not looked for: they need example_inputs (a recorded run)"))
        else:
            skips, not_done = residual.add_skip_quantizers(model, graph)
            skipped.extend(not_done)
            if any(sk.added for sk in skips):
                graph = capture.record(model, example_inputs)  # now with the skip quantizers in it
    modules = dict(model.named_modules(remove_duplicate=False))
    sites = _sites(graph, modules)

    uf = _UnionFind()
    domain_rules = {}  # root -> set of rule names

    def join(a, b, rule):
        ra, rb = uf.find(a), uf.find(b)
        merged = domain_rules.pop(ra, set()) | domain_rules.pop(rb, set()) | {rule}
        domain_rules[uf.union(a, b)] = merged

    passes = []
    for n in graph.nodes:
        kind = _classify(n, modules)
        if kind is None:
            continue
        what, arg = kind
        if what == "concat" and "concat" in rules and isinstance(arg, (list, tuple)):
            for x in arg:
                if isinstance(x, Node):
                    join(n, x, "concat")
        elif what == "add" and "add" in rules and all(isinstance(x, Node) for x in arg):
            join(arg[0], arg[1], "add")
        elif what in ("maxpool", "pass") and isinstance(arg, Node):
            passes.append((what, arg, n))

    # A quantizer object already used on several tensors ties their domains.
    by_quantizer = {}
    for s in sites:
        q = getattr(modules[s.owner] if s.owner else model, s.attr)
        by_quantizer.setdefault(id(q), []).append(s.node)
    for nodes in by_quantizer.values():
        for x in nodes[1:]:
            if uf.find(x) != uf.find(nodes[0]):
                join(nodes[0], x, "existing")

    quantized_roots = lambda: {uf.find(s.node) for s in sites}  # noqa: E731
    if passes:
        changed = True
        while changed:  # through commuting ops, when the far side is quantized
            changed = False
            roots = quantized_roots()
            for what, x, y in passes:
                if what == "maxpool" and "maxpool" not in rules:
                    continue
                rx, ry = uf.find(x), uf.find(y)
                if rx == ry or ry not in roots:
                    continue
                # A MaxPool makes a domain by itself; a reshape/upsample only extends one a rule made.
                if what == "maxpool" or rx in domain_rules or ry in domain_rules:
                    join(x, y, "maxpool" if what == "maxpool" else "passthrough")
                    changed = True

    # Group the sites of every domain that a rule touched.
    by_root = {}
    for s in sites:
        root = uf.find(s.node)
        if root in domain_rules:
            by_root.setdefault(root, []).append(s)
    groups = []
    for root, members in by_root.items():
        members.sort(key=lambda s: s.order)
        uniq, seen = [], set()
        for s in members:
            if (s.owner, s.attr) not in seen:
                seen.add((s.owner, s.attr))
                uniq.append(s)
        eligible = []
        for s in uniq:
            q = getattr(modules[s.owner] if s.owner else model, s.attr)
            if q.disabled:
                skipped.append((s.path, "quantizer disabled (kept float)"))
            elif q.axis is not None:
                skipped.append((s.path, f"per-channel input quantizer (axis={q.axis})"))
            else:
                eligible.append((s, q))
        if len(eligible) < 2:
            continue
        major_site, major = _majority(eligible)
        kept = [(major_site, major)]
        for s, q in eligible:
            if s is major_site:
                continue
            reason = _compatible(q, major)
            if reason:
                skipped.append((s.path, reason))
            else:
                kept.append((s, q))
        if len(kept) < 2:
            continue
        kept.sort(key=lambda sq: sq[0].order)
        tensors = sorted({s.node.name for s, _ in kept})
        labels = tuple(r for r in ("concat", "maxpool", "add", "passthrough", "existing") if r in domain_rules[root])
        groups.append(ScaleGroup(major_site.path, [s.path for s, _ in kept], labels, tensors, major))
        amaxes = [q.amax for _, q in kept if q.amax is not None]
        if amaxes and all(a.numel() == 1 for a in amaxes):
            merged = torch.stack([a.detach().float().cpu().reshape(()) for a in amaxes]).max()
            if major.amax is None:
                major.amax = merged
            else:
                major.amax = merged.reshape(major.amax.shape)
        for s, q in kept:
            if s is not major_site:
                owner = modules[s.owner] if s.owner else model
                setattr(owner, s.attr, major)
    groups.sort(key=lambda g: g.major)
    return SharingReport(groups, skipped, auto_leaves, skip_quantizers=skips)


def capture_graph(model, example_inputs=None, leaf_modules=()):
    """(capture.Graph, fx leaves chosen): a recorded run with example_inputs, else a torch.fx trace."""
    if example_inputs is not None:
        return capture.record(model, example_inputs), []
    fx_graph, auto = trace(model, leaf_modules)
    return capture.from_fx(model, fx_graph), auto
