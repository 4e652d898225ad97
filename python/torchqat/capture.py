"""Graph capture for placement and BN folding: record what a model does on example inputs.

`record(model, example_inputs)` runs the model once (eval mode, no_grad, quantizers bypassed, all
state restored afterwards) with a forward pre/post hook on every submodule and a
TorchFunctionMode that sees every torch function and Tensor method called outside leaf modules
(tensor `+`, `+=`, torch.add, torch.cat, view, ...). The result is an fx-like graph (nodes with
`op`, `target`, `args`, `kwargs`, `users`) of the ops that ran, so code written for torch.fx
reads it unchanged. Because it records what ran, Python control flow (loops over a layer list,
`if self.training`, shape tests) is no obstacle: it is the branch taken for these inputs,
as with torch.jit.trace or torch.export. Unlike those, it keeps module identity (a call_module
node names the QuantConv2d whose `_input_quantizer` it reads), sees disabled quantizers, and
knows for every op the module whose forward ran it (`scope`) and the module calls that returned
each tensor (`Graph.returned_by`), which is what inserting a skip quantizer with a forward hook
needs.

Leaves (recorded as one call_module node, their inside not recorded) are what torch.fx makes
leaves (torch.nn's own modules except containers) plus every quantizer and quantized module.
`from_fx(model)` gives the same graph type from a torch.fx symbolic trace (no example inputs).
"""
import dataclasses
import threading

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree

__all__ = ["Node", "Graph", "record", "from_fx", "is_leaf"]

_state = threading.local()  # the skip-quantizer hook being run, so its quantizer call is named after its owner


class Node:
    """One op of a captured graph, shaped like torch.fx.Node (op, target, args, kwargs, users, name)."""

    def __init__(self, graph, op, target, args=(), kwargs=None, scope="", name=None):
        self.graph = graph
        self.op = op                    # placeholder | call_module | call_function | call_method | output
        self.target = target            # module path, function, method name
        self.args = args
        self.kwargs = kwargs or {}
        self.scope = scope              # path of the module whose forward ran this op
        self.users = {}
        self.order = len(graph.nodes)
        label = target if isinstance(target, str) else getattr(target, "__name__", op)
        self.name = name or (target if op == "call_module" else f"{label.strip('_')}_{self.order}")
        self.owner = None               # for a quantizer call: (owner module path, attribute)
        self.live = False               # computed from the model's inputs (not a constant or a parameter)

    def __repr__(self):
        return f"Node({self.name}: {self.op} {self.target!r})"


@dataclasses.dataclass
class Call:
    """One call of a module: its path, the module, the nodes it returned."""
    path: str
    module: nn.Module
    outputs: list
    single: bool = False   # it returned one tensor (not a tuple or list)


class Graph:
    """One recorded run of a model: its nodes (ops with their producers) and every module call."""

    def __init__(self):
        self.nodes = []
        self.calls = []          # every module call, inner ones first
        self.call_counts = {}    # id(module) -> number of calls
        self.source = "record"

    def _add(self, *args, **kwargs):
        n = Node(self, *args, **kwargs)
        self.nodes.append(n)
        for x in _nodes_in((n.args, n.kwargs)):
            x.users[n] = None
        n.live = any(x.live for x in _nodes_in((n.args, n.kwargs)))
        return n

    def returned_by(self, node):
        """The module calls (inner first) whose return value held `node`."""
        return [c for c in self.calls if any(o is node for o in c.outputs)]


def _nodes_in(tree):
    return [x for x in _pytree.tree_leaves(tree) if isinstance(x, Node)]


def is_leaf(module):
    """Whether a module is recorded as one node: quantizers, quantized modules, torch.nn's own layers."""
    from .nn.modules._utils import QuantInputMixin, QuantMixin
    from .nn.modules.tensor_quantizer import TensorQuantizer

    if isinstance(module, (TensorQuantizer, QuantInputMixin, QuantMixin)):
        return True
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return False
    mod = type(module).__module__
    return mod.startswith("torch.nn") or mod.startswith("torch.ao.nn")


class _Recorder(TorchFunctionMode):
    def __init__(self, model):
        super().__init__()
        self.graph = Graph()
        self.model = model
        self.names = {}
        for name, m in model.named_modules(remove_duplicate=False):
            self.names.setdefault(id(m), name)
        self.table = {}          # id(tensor) -> (tensor, version, node)
        self.stack = []          # (path, module, is_leaf)
        self.leaf_depth = 0

    # tensor <-> node
    def node_of(self, t):
        e = self.table.get(id(t))
        if e is not None and e[0] is t:
            return e[2]
        return None

    def bind(self, t, node):
        self.table[id(t)] = (t, t._version, node)

    def to_nodes(self, tree):
        return _pytree.tree_map(lambda x: (self.node_of(x) or x) if isinstance(x, torch.Tensor) else x, tree)

    def scope(self):
        return self.stack[-1][0] if self.stack else ""

    # torch functions outside leaves
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf_depth:
            return out
        outs = [t for t in _pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outs:
            return out
        name = getattr(func, "__name__", "")
        if getattr(torch.Tensor, name, None) is func or (
                getattr(func, "__objclass__", None) is torch._C.TensorBase):
            op, target = "call_method", name
        else:
            op, target = "call_function", func
        node = self.graph._add(op, target, self.to_nodes(tuple(args)), self.to_nodes(dict(kwargs)), self.scope())
        for t in outs:
            self.bind(t, node)
        return out

    # module hooks
    def pre(self, m, args, kwargs):
        parent = self.stack[-1] if self.stack else None
        path = None
        if parent is not None:
            for k, child in parent[1]._modules.items():
                if child is m:
                    path = f"{parent[0]}.{k}" if parent[0] else k
                    break
        if path is None:
            path = self.names.get(id(m), "")
        leaf = is_leaf(m) and m is not self.model
        self.stack.append((path, m, leaf, self.to_nodes((args, kwargs)) if self.leaf_depth == 0 else None))
        if leaf:
            self.leaf_depth += 1
        self.graph.call_counts[id(m)] = self.graph.call_counts.get(id(m), 0) + 1

    def post(self, m, args, kwargs, out):
        path, _, leaf, recorded = self.stack.pop()
        if leaf:
            self.leaf_depth -= 1
        if self.leaf_depth:
            return None
        replaced = None
        if leaf:
            a, k = recorded
            node = self.graph._add("call_module", path, a, k, self.scope())
            hook = getattr(_state, "hook", None)
            if hook is not None:
                node.owner = (self.names.get(id(hook.owner), ""), hook.attr)
            elif self.stack:
                ppath, pm = self.stack[-1][0], self.stack[-1][1]
                for attr, child in pm._modules.items():
                    if child is m:
                        node.owner = (ppath, attr)
            if node.owner is None:
                owner, _, attr = path.rpartition(".")
                node.owner = (owner, attr)
            ins = {id(t) for t in _pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            leaves, spec = _pytree.tree_flatten(out)
            fresh = []
            for t in leaves:
                if isinstance(t, torch.Tensor) and id(t) in ins and self._unchanged(t):
                    self.leaf_depth += 1  # not an op of the model: not recorded
                    try:
                        t = t.view_as(t)  # an identity (disabled quantizer, Dropout): give its output its own node
                    finally:
                        self.leaf_depth -= 1
                fresh.append(t)
            if any(a is not b for a, b in zip(fresh, leaves)):
                out = replaced = _pytree.tree_unflatten(fresh, spec)
            for t in fresh:
                if isinstance(t, torch.Tensor):
                    self.bind(t, node)
        outs = [self.node_of(t) for t in _pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.graph.calls.append(Call(path, m, [n for n in outs if n is not None], isinstance(out, torch.Tensor)))
        return replaced

    def _unchanged(self, t):
        e = self.table.get(id(t))
        return e is not None and e[0] is t and e[1] == t._version


def record(model, example_inputs):
    """The Graph of one run of `model` on example_inputs (a tensor, a tuple of arguments, or a dict of
    keyword arguments). The model's modes, quantizer switches and state are restored afterwards."""
    from .nn.modules.tensor_quantizer import TensorQuantizer

    if isinstance(example_inputs, dict):
        args, kwargs = (), dict(example_inputs)
    elif isinstance(example_inputs, (tuple, list)):
        args, kwargs = tuple(example_inputs), {}
    else:
        args, kwargs = (example_inputs,), {}
    rec = _Recorder(model)
    g = rec.graph
    for i, t in enumerate(_pytree.tree_leaves((args, kwargs))):
        if isinstance(t, torch.Tensor):
            n = g._add("placeholder", f"input_{i}")
            n.live = True
            rec.bind(t, n)
    quantizers = [m for m in model.modules() if isinstance(m, TensorQuantizer)]
    disabled = [q.disabled for q in quantizers]
    training = [(m, m.training) for m in model.modules()]
    handles = []
    try:
        for q in quantizers:
            q.disable()
        model.eval()
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(rec.pre, with_kwargs=True, prepend=True))
            handles.append(m.register_forward_hook(rec.post, with_kwargs=True, prepend=True))
        with torch.no_grad(), rec:
            out = model(*args, **kwargs)
        g._add("output", "output", (rec.to_nodes(out),))
    finally:
        for h in handles:
            h.remove()
        for q, d in zip(quantizers, disabled):
            (q.disable if d else q.enable)()
        for m, t in training:
            m.training = t
    return g


def from_fx(model, fx_graph):
    """A Graph from a torch.fx graph of `model` (placement's fx tracer: same leaves as record)."""
    g = Graph()
    g.source = "fx"
    mapping = {}
    for n in fx_graph.nodes:
        args = _pytree.tree_map(lambda x: mapping.get(x, x), n.args)
        kwargs = _pytree.tree_map(lambda x: mapping.get(x, x), dict(n.kwargs))
        if n.op == "get_attr":
            args, kwargs = (), {}
        node = g._add(n.op, n.target, args, kwargs, name=n.name)
        if n.op == "placeholder":
            node.live = True
        if n.op == "call_module":
            owner, _, attr = n.target.rpartition(".")
            node.owner = (owner, attr)
            g.call_counts[id(model.get_submodule(n.target))] = g.call_counts.get(
                id(model.get_submodule(n.target)), 0) + 1
        mapping[n] = node
    return g
