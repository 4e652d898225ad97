"""Residual adds: a quantizer on the skip operand, so TensorRT fuses the conv with the add.

TensorRT fuses `Conv (+BN) + Add (+act)` into one int8 kernel only when the add's other input
(the skip connection) is quantized; with a float skip the conv writes fp16/fp32 and a reformat
follows. pytorch-quantization puts quantizers on module inputs only, so an add written as a tensor
op (torchvision's `out += identity`, YOLOv5's `x + cv2(cv1(x))`, torch.add) has a float skip.

On a recorded graph (torchqat.capture.record) an add is residual when one operand (the main one)
comes from a quantized weighted layer (QuantConv*, QuantLinear with its input quantizer on)
through BatchNorm / pointwise activations / Identity, read by the add alone, and the other (the
skip) is an activation not yet quantized. When both operands qualify, the second one is the skip
(`out += identity`: `identity`). The skip quantizer is put on the skip tensor where it is made: a
forward hook on the innermost module that returned it and runs once per forward (the model's code
is not edited). It is the input quantizer of the skip's other readers when they are quantized
layers (one scale for the branch and the add, as NVIDIA's YOLOv5/YOLOv7 recipes share the
bottleneck's cv1 input quantizer; that reader then re-quantizes on the same scale, which changes
nothing, and torchqat.onnx.export drops the repeated Q/DQ), else a new per-tensor TensorQuantizer
with the main layer's input settings. Either way it is a submodule of the module whose forward holds
the add, `<module>._skip_quantizer` (`_skip1_quantizer`, ... for more adds), so calibrate, state_dict
and export see it. Adds whose skip is also read by a float op, or made by no single module, are
reported and left alone.
"""
import dataclasses
import operator

import torch
from torch import nn
from torch.nn import functional as F

from . import capture
from .capture import Node
from .nn.modules._utils import QuantInputMixin, QuantMixin
from .nn.modules.tensor_quantizer import TensorQuantizer
from .tensor_quant import QuantDescriptor

__all__ = ["SkipQuantizer", "SkipQuantHook", "find_residual_adds", "add_skip_quantizers"]

_ADD_FUNCS = ("add", "__add__", "__iadd__", "__radd__", "add_")
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.LeakyReLU, nn.Hardswish, nn.GELU, nn.Mish, nn.ELU, nn.PReLU,
                nn.Identity, nn.Dropout, nn.modules.batchnorm._BatchNorm)
_ACT_FUNCS = {F.relu, F.relu6, F.silu, F.leaky_relu, F.hardswish, F.gelu, F.mish, F.elu, F.dropout}
_ACT_METHODS = {"relu", "relu_"}
_ADD_FUNCTIONS = {torch.add, operator.add, operator.iadd}
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


@dataclasses.dataclass
class SkipQuantizer:
    """One residual add's skip quantizer: `owner.attr` quantizes the output of module `producer`."""
    add: str         # the add: "<module whose forward holds it>:<node name>"
    main: str        # the weighted layer the add is fused into
    producer: str    # module whose output (the skip) gets quantized
    quantizer: str   # path of the quantizer
    shared_with: str  # the quantizer of another reader it is, or "" (a new one)
    added: bool = True  # False: it was there already

    def __str__(self):
        state = "added" if self.added else "present"
        share = f" = {self.shared_with}" if self.shared_with else " (new)"
        return f"{self.add}: skip from {self.producer} -> {self.quantizer}{share}, main {self.main} [{state}]"


class SkipQuantHook:
    """Forward hook on the producer: returns getattr(owner, attr)(output). Looked up each call, so
    share_scales replacing the attribute takes effect."""

    def __init__(self, owner, attr):
        self.owner = owner
        self.attr = attr

    def __call__(self, module, args, out):
        q = getattr(self.owner, self.attr)
        prev = getattr(capture._state, "hook", None)
        capture._state.hook = self
        try:
            return q(out)
        finally:
            capture._state.hook = prev


def _module(model, modules, n):
    return modules.get(n.target) if n.op == "call_module" else None


def _is_quantizer_node(n, modules):
    return n.op == "call_module" and isinstance(modules.get(n.target), TensorQuantizer)


def _passes(n, modules):
    m = _module(None, modules, n)
    if m is not None:
        return isinstance(m, _ACT_MODULES)
    if n.op == "call_function":
        return n.target in _ACT_FUNCS
    if n.op == "call_method":
        return n.target in _ACT_METHODS
    return False


def _weighted_source(x, add, modules):
    """The quantized weighted-layer node `x` comes from through BN/activations, each step read only
    along the chain (so TensorRT can fuse it into the add); else None."""
    for _ in range(16):
        if not isinstance(x, Node) or list(x.users) != [add]:
            return None
        m = _module(None, modules, x)
        if m is not None and isinstance(m, _WEIGHTED) and isinstance(m, (QuantMixin, QuantInputMixin)):
            q = getattr(m, "_input_quantizer", None)
            return x if isinstance(q, TensorQuantizer) and not q._disabled else None
        if not _passes(x, modules):
            return None
        args = [a for a in x.args if isinstance(a, Node)]
        if len(args) != 1:
            return None
        add, x = x, args[0]
    return None


def _operands(n):
    if (n.op == "call_function" and n.target in _ADD_FUNCTIONS) or (n.op == "call_method" and n.target in _ADD_FUNCS):
        a = n.args[0] if n.args else n.kwargs.get("input", n.kwargs.get("self"))
        b = n.args[1] if len(n.args) > 1 else n.kwargs.get("other")
        if n.kwargs.get("alpha", 1) != 1:
            return None
        return a, b
    return None


def find_residual_adds(model, graph):
    """[(add node, main node, skip node)] of the recorded graph's residual adds."""
    modules = dict(model.named_modules(remove_duplicate=False))
    out = []
    for n in graph.nodes:
        ops = _operands(n)
        if ops is None or not all(isinstance(o, Node) and o.live for o in ops):
            continue
        a, b = ops
        if a is b:
            continue
        wa, wb = _weighted_source(a, n, modules), _weighted_source(b, n, modules)
        if wb is not None and wa is None:
            out.append((n, wb, a))
        elif wa is not None:
            out.append((n, wa, b))
    return out


def _reader_quantizers(skip, add, modules):
    """(quantizers of the skip's other readers, name of a float reader or None)."""
    qs = []
    for u in skip.users:
        if u is add:
            continue
        m = _module(None, modules, u)
        if isinstance(m, TensorQuantizer):
            qs.append((f"{u.owner[0]}.{u.owner[1]}".lstrip("."), m))
        elif isinstance(m, (QuantMixin, QuantInputMixin)) and u.args and u.args[0] is skip and \
                isinstance(getattr(m, "_input_quantizer", None), TensorQuantizer):
            qs.append((f"{u.target}._input_quantizer", m._input_quantizer))
        else:
            return qs, f"{u.op} {u.target if isinstance(u.target, str) else getattr(u.target, '__name__', u.target)}"
    return qs, None


def _free_attr(owner):
    for i in range(1000):
        attr = "_skip_quantizer" if i == 0 else f"_skip{i}_quantizer"
        if attr not in owner._modules and not hasattr(owner, attr):
            return attr
    raise RuntimeError("torchqat: no free _skip<i>_quantizer attribute")


def _new_quantizer(main_q):
    desc = QuantDescriptor(num_bits=main_q._num_bits, unsigned=main_q._unsigned, narrow_range=main_q._narrow_range,
                           calib_method=main_q._calib_method)
    return TensorQuantizer(desc)


def add_skip_quantizers(model, graph):
    """Puts a quantizer on the skip operand of every residual add of the recorded `graph` of `model`.

    Returns ([SkipQuantizer], [(add, reason it was left alone)]).
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    names = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), name)
    done, skipped, planned = [], [], {}
    for add, main, skip in find_residual_adds(model, graph):
        label = f"{add.scope or '<model>'}:{add.name}"  # e.g. layer1.0:iadd_17
        main_m = modules[main.target]
        if _is_quantizer_node(skip, modules):
            done.append(SkipQuantizer(label, main.target, "", f"{skip.owner[0]}.{skip.owner[1]}".lstrip("."), "",
                                      added=False))
            continue
        readers, float_reader = _reader_quantizers(skip, add, modules)
        if float_reader is not None:
            skipped.append((label, f"its skip operand is also read by the float op {float_reader}"))
            continue
        readers = [(p, q) for p, q in readers if not q._disabled and q._axis is None]
        producer = None
        for c in graph.returned_by(skip):
            if (graph.call_counts.get(id(c.module)) == 1 and c.single and c.module is not model
                    and not isinstance(c.module, TensorQuantizer)):
                producer = c
                break
        if producer is None:
            skipped.append((label, "its skip operand is not the output of one module called once per forward "
                            "(a graph input, or made by a function or a shared module)"))
            continue
        if id(skip) in planned:  # one skip tensor feeding several adds: one quantizer
            first = planned[id(skip)]
            done.append(dataclasses.replace(first, add=label, main=main.target))
            continue
        owner = modules.get(add.scope, model) if add.scope else model
        if isinstance(owner, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            owner = model
        attr = _free_attr(owner)
        shared, q = (readers[0] if readers else ("", None))
        owner_name = names.get(id(owner), "")
        rec = SkipQuantizer(label, main.target, producer.path, f"{owner_name}.{attr}".lstrip("."), shared)
        planned[id(skip)] = rec
        done.append(rec)
        if q is None:
            q = _new_quantizer(main_m._input_quantizer)
            q.train(owner.training)
        owner.add_module(attr, q)
        producer.module.register_forward_hook(SkipQuantHook(owner, attr))
    return done, skipped
