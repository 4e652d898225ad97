"""Quantization descriptors and functional quantization, with pytorch-quantization's names.

The functions call torchqat's operators; nothing here computes.
"""
import copy

import numpy as np
import torch

from . import _C, ops

__all__ = [
    "QuantDescriptor", "ScaledQuantDescriptor", "tensor_quant", "fake_tensor_quant", "legacy_fake_tensor_quant",
    "scaled_e4m3", "fake_affine_tensor_quant",
    "QUANT_DESC_8BIT_PER_TENSOR", "QUANT_DESC_UNSIGNED_8BIT_PER_TENSOR",
    "QUANT_DESC_8BIT_CONV1D_WEIGHT_PER_CHANNEL", "QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL",
    "QUANT_DESC_8BIT_CONV3D_WEIGHT_PER_CHANNEL", "QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW",
    "QUANT_DESC_8BIT_CONVTRANSPOSE1D_WEIGHT_PER_CHANNEL", "QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL",
    "QUANT_DESC_8BIT_CONVTRANSPOSE3D_WEIGHT_PER_CHANNEL",
]

_FIELDS = ("fake_quant", "axis", "amax", "learn_amax", "scale_amax", "calib_method", "unsigned", "narrow_range")


# pytorch-quantization 2.2's num_bits for FP8 E4M3 (4 exponent, 3 mantissa bits; float8_e4m3fn).
E4M3 = (4, 3)


def _check_num_bits(num_bits):
    """An int in [2, 16] or the tuple (4, 3); pytorch-quantization's exception types (TypeError, ValueError)."""
    if isinstance(num_bits, (tuple, list)):  # a list: (4, 3) read back from YAML
        if tuple(num_bits) != E4M3:
            raise TypeError(f"num_bits must be an integer in [2, 16] or the tuple (4, 3) (FP8 E4M3), got {num_bits!r}; "
                            "no other floating-point format is supported")
        return E4M3
    if isinstance(num_bits, bool) or not isinstance(num_bits, int):
        raise TypeError(f"num_bits must be an integer in [2, 16] or the tuple (4, 3) (FP8 E4M3), got {num_bits!r}")
    _C.check_num_bits("QuantDescriptor", num_bits)  # the C++ descriptor's rule and message
    return num_bits


def _check_block_size(block_size, num_bits, axis, fake_quant, calib_method):
    """block_size: None, or an int >= 1 for an integer format with axis=(0,) (blocks along dim 1 of a
    2-d weight), fake quant and max calibration (a histogram per block is not kept)."""
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be None or an int, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if num_bits == E4M3:
        raise ValueError("block_size is for integer formats; num_bits=(4, 3) (FP8 E4M3) is per tensor or per channel")
    if axis != (0,):
        raise ValueError(f"block_size needs axis=(0,) (one amax per output row and block along dim 1), got axis={axis}")
    if not fake_quant or calib_method != "max":
        raise ValueError("block_size needs fake_quant=True and calib_method='max'")
    return block_size


def is_e4m3(num_bits):
    """Whether num_bits names FP8 E4M3."""
    return num_bits == E4M3


class ScaledQuantDescriptor:
    """How a tensor is quantized: bits, axis (the dims that keep their own amax), amax, calibration.

    Same fields and defaults as pytorch-quantization's QuantDescriptor; values are validated here
    so a bad descriptor fails when it is made, naming the field.
    """

    def __init__(self, num_bits=8, name=None, **kwargs):
        num_bits = _check_num_bits(num_bits)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string or None, got {type(name).__name__}")
        self._num_bits = num_bits
        self._name = name
        self._fake_quant = bool(kwargs.pop("fake_quant", True))
        axis = kwargs.pop("axis", None)
        if axis is not None:
            axis = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
            if not all(isinstance(a, int) and not isinstance(a, bool) for a in axis):
                raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}")
        self._axis = axis
        amax = kwargs.pop("amax", None)
        if amax is not None:
            if not isinstance(amax, (float, int, list, np.ndarray)) or isinstance(amax, bool):
                raise TypeError(f"amax must be float, list or ndarray, not {type(amax).__name__}")
            amax = np.array(amax, dtype=np.float32)
            if not np.all(np.isfinite(amax)) or np.any(amax < 0):
                raise ValueError(f"amax must be finite and >= 0, got {amax}")
        self._amax = amax
        self._learn_amax = bool(kwargs.pop("learn_amax", False))
        self._scale_amax = kwargs.pop("scale_amax", None)
        if self._scale_amax is not None and not (self._scale_amax > 0):
            raise ValueError(f"scale_amax must be > 0, got {self._scale_amax}")
        self._calib_method = kwargs.pop("calib_method", "max")
        if self._calib_method not in ("max", "histogram"):
            raise ValueError(f"calib_method must be 'max' or 'histogram', got {self._calib_method!r}")
        self._unsigned = bool(kwargs.pop("unsigned", False))
        self._narrow_range = bool(kwargs.pop("narrow_range", False))
        self._block_size = _check_block_size(kwargs.pop("block_size", None), num_bits, self._axis,
                                             self._fake_quant, self._calib_method)
        if kwargs:
            raise TypeError(f"Unused keys: {list(kwargs.keys())}")
        if num_bits == E4M3 and self._unsigned:
            raise ValueError("num_bits=(4, 3) (FP8 E4M3) is a signed format: unsigned must be False")
        if self._learn_amax and self._axis is not None:
            # TensorQuantizer learns one range (its clip's two scalar bounds), as pytorch-quantization.
            raise TypeError(f"axis is ignored and must be None when learn_amax is true, got axis={self._axis}")

    num_bits = property(lambda self: self._num_bits, doc='Bits of the integer grid (2..16), or (4, 3): FP8 E4M3.')
    name = property(lambda self: self._name, doc='An optional label, shown in reprs.')
    fake_quant = property(lambda self: self._fake_quant, doc='Fake quantization (always True in torchqat).')
    axis = property(lambda self: self._axis, doc='The dims that keep their own amax (None: per tensor).')
    amax = property(lambda self: self._amax, doc='A fixed amax (np.float32 array) or None (calibrate or quantize dynamically).')
    learn_amax = property(lambda self: self._learn_amax, doc='Whether the range is learned (through TensorQuantizer.clip).')
    scale_amax = property(lambda self: self._scale_amax, doc='A factor applied to amax before quantizing, or None.')
    calib_method = property(lambda self: self._calib_method, doc="'max' or 'histogram': the calibrator a TensorQuantizer makes.")
    unsigned = property(lambda self: self._unsigned, doc='Unsigned grid [0, 2^b - 1].')
    narrow_range = property(lambda self: self._narrow_range, doc='Signed grid without its lowest value ([-bound, bound]).')
    block_size = property(lambda self: self._block_size,
                          doc='None, or one amax per block of that many elements along dim 1 of a 2-d weight '
                              '(with axis=(0,): amax [out, in / block_size], ONNX opset 21 blocked Q/DQ).')

    def __str__(self):
        s = f"{self._num_bits}bit" + (" fake" if self._fake_quant else " real")
        s += " per-tensor" if self._axis is None else f" axis={self._axis if len(self._axis) > 1 else self._axis[0]}"
        if self._amax is not None:
            s += f" amax={self._amax}"
        if self._learn_amax:
            s += " learn_amax"
        if self._unsigned:
            s += " unsigned"
        if self._narrow_range:
            s += " narrow"
        if self._block_size is not None:
            s += f" block_size={self._block_size}"
        return f"QuantDescriptor({s})"

    __repr__ = __str__

    def __eq__(self, other):
        if not isinstance(other, ScaledQuantDescriptor):
            return NotImplemented
        a, b = dict(self.__dict__), dict(other.__dict__)
        amax_a, amax_b = a.pop("_amax"), b.pop("_amax")
        same_amax = (amax_a is None and amax_b is None) or (
            amax_a is not None and amax_b is not None and np.array_equal(amax_a, amax_b))
        return a == b and same_amax

    def __hash__(self):
        return hash((self._num_bits, self._axis, self._unsigned, self._narrow_range, self._calib_method))

    def dict(self):
        """The non-default fields (num_bits and name always), as pytorch-quantization serialises them."""
        d = {"num_bits": self._num_bits, "name": self._name}
        if not self._fake_quant:
            d["fake_quant"] = False
        if self._axis is not None:
            d["axis"] = self._axis
        if self._amax is not None:
            d["amax"] = self._amax.tolist()
        if self._scale_amax is not None:
            d["scale_amax"] = self._scale_amax
        if self._learn_amax:
            d["learn_amax"] = True
        if self._unsigned:
            d["unsigned"] = True
        if self._narrow_range:
            d["narrow_range"] = True
        if self._calib_method != "max":
            d["calib_method"] = self._calib_method
        if self._block_size is not None:
            d["block_size"] = self._block_size
        return d

    def to_yaml(self):
        """dict() as a YAML string (axis as a list, FP8's num_bits as [4, 3]); needs PyYAML."""
        import yaml
        d = self.dict()
        if isinstance(d["num_bits"], tuple):
            d["num_bits"] = list(d["num_bits"])
        if "axis" in d:
            d["axis"] = list(d["axis"])
        return yaml.dump(d, width=120)

    @classmethod
    def from_yaml(cls, yaml_str):
        """The descriptor a to_yaml() string describes (axis back to a tuple); needs PyYAML."""
        import yaml
        d = yaml.safe_load(yaml_str)
        if not isinstance(d, dict):
            raise TypeError(f"from_yaml expects a YAML mapping of descriptor fields, got {type(d).__name__}")
        if "axis" in d and isinstance(d["axis"], list):
            d["axis"] = tuple(d["axis"])
        return cls(**d)

    def replace(self, **changes):
        """A copy with some fields changed (validated like the constructor)."""
        d = self.dict()
        d.update(changes)
        return ScaledQuantDescriptor(**d)

    def __deepcopy__(self, memo):
        return ScaledQuantDescriptor(**copy.deepcopy(self.dict(), memo))


QuantDescriptor = ScaledQuantDescriptor

QUANT_DESC_8BIT_PER_TENSOR = QuantDescriptor(num_bits=8)
QUANT_DESC_UNSIGNED_8BIT_PER_TENSOR = QuantDescriptor(num_bits=8, unsigned=True)
QUANT_DESC_8BIT_CONV1D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_CONV2D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_CONV3D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_LINEAR_WEIGHT_PER_ROW = QuantDescriptor(num_bits=8, axis=(0))
QUANT_DESC_8BIT_CONVTRANSPOSE1D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))
QUANT_DESC_8BIT_CONVTRANSPOSE2D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))
QUANT_DESC_8BIT_CONVTRANSPOSE3D_WEIGHT_PER_CHANNEL = QuantDescriptor(num_bits=8, axis=(1))


def _amax_tensor(inputs, amax):
    if not torch.is_tensor(amax):
        amax = torch.tensor(amax, dtype=torch.float32)
    return amax.to(inputs.device)


def fake_tensor_quant(inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
    """Fake-quantize inputs with amax (scalar or broadcast-shaped); differentiable in inputs (STE).

    As pytorch-quantization's, amax gets no gradient (it is detached): an amax computed from
    inputs (x.abs().max()) passes nothing back through it. torch.ops.torchqat.fake_quant itself
    gives an amax that requires grad the LSQ gradient.
    """
    return ops.fake_quant(inputs, _amax_tensor(inputs, amax).detach(), num_bits, unsigned, narrow_range, None)


legacy_fake_tensor_quant = fake_tensor_quant


def scaled_e4m3(inputs, amax=None, E=4, M=3):
    """FP8 E4M3 fake quantization: e4m3(inputs / step) * step, step = amax / 448, saturating at +-amax
    (pytorch-quantization 2.2's scaled_e4m3, computed as ONNX Q/DQ does; amax=None means scale 1,
    i.e. amax 448)."""
    if (E, M) != E4M3:
        raise TypeError(f"scaled_e4m3 supports E=4, M=3 (FP8 E4M3) only, got E={E}, M={M}")
    return ops.fake_quant_e4m3(inputs, _amax_tensor(inputs, 448.0 if amax is None else amax).detach(), None)


class _TensorQuantFunction(torch.autograd.Function):
    """torchqat.quantize's integer values as floats, differentiable in inputs: the backward is
    fake_quant's STE mask (torchqat.fake_quant_backward), as pytorch-quantization's TensorQuantFunction."""

    @staticmethod
    def forward(ctx, inputs, amax, num_bits, unsigned, narrow_range):
        q, step = ops.quantize(inputs, amax, num_bits, unsigned, narrow_range, None)
        scale = step.reciprocal()
        ctx.save_for_backward(inputs, amax)
        ctx.quant_args = (num_bits, unsigned, narrow_range)
        ctx.mark_non_differentiable(scale)
        return q.to(inputs.dtype), scale

    @staticmethod
    def backward(ctx, grad_outputs, grad_scale):
        inputs, amax = ctx.saved_tensors
        num_bits, unsigned, narrow_range = ctx.quant_args
        grad_inputs, _ = torch.ops.torchqat.fake_quant_backward(grad_outputs, inputs, amax, num_bits, unsigned,
                                                                narrow_range, None, False)
        return grad_inputs, None, None, None, None


def fake_affine_tensor_quant(inputs, min_range, max_range, num_bits=8):
    """Asymmetric fake quantization over [min_range, max_range] (pytorch-quantization's experimental
    gemmlowp-style function): 2^num_bits levels of step (max - min) / (2^num_bits - 1) starting at
    round(min / step) * step. Differentiable in inputs, where min_range <= x <= max_range.
    TensorRT's Q/DQ has zero point 0 only, so this does not export."""
    return ops.fake_affine_quant(inputs, _amax_tensor(inputs, min_range), _amax_tensor(inputs, max_range), num_bits)


def tensor_quant(inputs, amax, num_bits=8, unsigned=False, narrow_range=True):
    """(integer-valued outputs in inputs' dtype, scale = bound / amax), as pytorch-quantization returns.

    The integer values and step come from torchqat.quantize; scale is the step's reciprocal (float32).
    The outputs are differentiable in inputs with the STE mask |x| <= amax; amax gets no gradient.
    """
    return _TensorQuantFunction.apply(inputs, _amax_tensor(inputs, amax).detach(), num_bits, unsigned, narrow_range)
