"""Mixins that give a torch.nn module its quantizers, with pytorch-quantization's names.

`QuantMixin` (input + weight quantizer) and `QuantInputMixin` (input quantizer only) hold the
class-level default descriptors; `pop_quant_desc_in_kwargs` picks the descriptors a constructor
was given. As in pytorch-quantization the two mixins are unrelated classes: client code such as
NVIDIA's YOLOv7 `transfer_torch_to_quantization` asks `isinstance(m, QuantInputMixin)` to tell
pooling (input only) from conv/linear (input + weight). `init_quantizer` works on an object made
with `cls.__new__(cls)` whose `vars()` were copied from a float module. The helpers at the bottom are shared by the Quant* modules (axis checks, copying a
float module's constructor arguments).
"""
import copy
import inspect

from torch import nn

from ...tensor_quant import QUANT_DESC_8BIT_PER_TENSOR, QuantDescriptor
from .tensor_quantizer import TensorQuantizer

__all__ = ["QuantMixin", "QuantInputMixin", "pop_quant_desc_in_kwargs"]


def _check_desc(desc, what):
    if not isinstance(desc, QuantDescriptor):
        raise ValueError(f"{what} must be a QuantDescriptor, got {type(desc).__name__}")


class QuantInputMixin:
    """A module with one input quantizer (pooling and the like)."""

    default_quant_desc_input = QUANT_DESC_8BIT_PER_TENSOR

    @classmethod
    def set_default_quant_desc_input(cls, value):
        """Descriptor used by modules of this class made from now on (a deep copy is kept)."""
        _check_desc(value, "quant_desc_input")
        cls.default_quant_desc_input = copy.deepcopy(value)

    def init_quantizer(self, quant_desc_input):
        """Makes `_input_quantizer`. Called by __init__ (or by hand on an object made with __new__)."""
        _check_desc(quant_desc_input, "quant_desc_input")
        if not quant_desc_input.fake_quant:
            raise ValueError("Only fake quantization is supported!")
        self._fake_quant = True
        self._input_quantizer = TensorQuantizer(quant_desc_input)

    @property
    def input_quantizer(self):
        """The TensorQuantizer of the module's input."""
        return self._input_quantizer


class QuantMixin:
    """A module with an input quantizer and a weight quantizer (not a QuantInputMixin)."""

    default_quant_desc_input = QUANT_DESC_8BIT_PER_TENSOR
    default_quant_desc_weight = QUANT_DESC_8BIT_PER_TENSOR

    # The same classmethod object, so it sets the default of the class it is called on.
    set_default_quant_desc_input = QuantInputMixin.__dict__["set_default_quant_desc_input"]

    @classmethod
    def set_default_quant_desc_weight(cls, value):
        """Weight descriptor used by modules of this class made from now on (a deep copy is kept)."""
        _check_desc(value, "quant_desc_weight")
        cls.default_quant_desc_weight = copy.deepcopy(value)

    def init_quantizer(self, quant_desc_input, quant_desc_weight, num_layers=None):
        """Makes `_input_quantizer` and `_weight_quantizer` (num_layers: pytorch-quantization's RNN argument)."""
        _check_desc(quant_desc_input, "quant_desc_input")
        _check_desc(quant_desc_weight, "quant_desc_weight")
        if not (quant_desc_input.fake_quant and quant_desc_weight.fake_quant):
            raise ValueError("Only fake quantization is supported!")
        self._fake_quant = True
        if num_layers is not None:  # RNNs: one pair per layer x direction, as ModuleLists
            self._input_quantizers = nn.ModuleList([TensorQuantizer(quant_desc_input) for _ in range(num_layers)])
            self._weight_quantizers = nn.ModuleList([TensorQuantizer(quant_desc_weight) for _ in range(num_layers)])
            return
        self._input_quantizer = TensorQuantizer(quant_desc_input)
        self._weight_quantizer = TensorQuantizer(quant_desc_weight)

    @property
    def input_quantizer(self):
        """The TensorQuantizer of the module's input."""
        return self._input_quantizer

    @property
    def weight_quantizer(self):
        """The TensorQuantizer of the module's weight."""
        return self._weight_quantizer


def is_quant_module(module):
    """True for a module with pytorch-quantization's quantizer attributes (either mixin)."""
    return isinstance(module, (QuantInputMixin, QuantMixin))


def pop_quant_desc_in_kwargs(quant_cls, input_only=False, **kwargs):
    """(quant_desc_input[, quant_desc_weight]) from kwargs or the class defaults; leftovers are an error."""
    quant_desc_input = kwargs.pop("quant_desc_input", quant_cls.default_quant_desc_input)
    _check_desc(quant_desc_input, "quant_desc_input")
    if not input_only:
        quant_desc_weight = kwargs.pop("quant_desc_weight", quant_cls.default_quant_desc_weight)
        _check_desc(quant_desc_weight, "quant_desc_weight")
    if kwargs:
        raise TypeError(f"Unused keys: {kwargs.keys()}")
    return quant_desc_input if input_only else (quant_desc_input, quant_desc_weight)


def split_quant_kwargs(kwargs, names=("quant_desc_input", "quant_desc_weight"), base=None):
    """Removes the quant descriptor kwargs from kwargs (in place) and returns them.

    With `base` (the float module class), a leftover keyword that base's constructor does not take
    is pytorch-quantization's TypeError("Unused keys: ..."); the ones it takes (device, dtype, ...)
    stay in kwargs for it.
    """
    quant = {k: kwargs.pop(k) for k in names if k in kwargs}
    if base is not None and kwargs:
        params = inspect.signature(base.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unused = [k for k in kwargs if k not in params]
            if unused:
                raise TypeError(f"Unused keys: {unused}")
    return quant


def check_axis(module, desc, what, rank):
    """Every axis of a descriptor must exist on a tensor of `rank` dimensions (the layer's weight or input)."""
    if desc.axis is None:
        return
    for a in desc.axis:
        if not -rank <= a < rank:
            raise ValueError(f"{module.__class__.__name__}: {what} axis {a} is out of range for a {what[11:]} "
                             f"with {rank} dimensions (valid: {-rank}..{rank - 1}); got {desc}")


def check_weight_axis(module, desc, weight_dim):
    """A weight descriptor's axes must exist on the layer's weight."""
    check_axis(module, desc, "quant_desc_weight", weight_dim)


def check_input_axis(module, desc, input_dim):
    """An input descriptor's axes must exist on the layer's (batched) input."""
    check_axis(module, desc, "quant_desc_input", input_dim)


def float_ctor_args(module, base):
    """The constructor arguments of `base` (a torch.nn class) that rebuild `module`, read from its attributes."""
    args = {}
    for name, p in inspect.signature(base.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in ("device", "dtype"):
            continue
        if hasattr(module, name):
            args[name] = getattr(module, name)
    return args


def quant_desc_kwargs(quant_desc_input=None, quant_desc_weight=None):
    return {k: v for k, v in (("quant_desc_input", quant_desc_input), ("quant_desc_weight", quant_desc_weight))
            if v is not None}
