"""TensorQuantizer: the quantize / calibrate / disabled state machine around one tensor.

Same attributes, methods and state-dict key (`_amax`) as pytorch-quantization's, so existing
scripts and checkpoints carry over. The numbers come from torchqat's operators.
"""
import logging
import math

import numpy as np
import torch
from torch import nn

from ... import _C, ops
from ...tensor_quant import QuantDescriptor, _check_num_bits, is_e4m3
from ._dynamic import dynamic_amax
from .clip import Clip

__all__ = ["TensorQuantizer"]

logger = logging.getLogger("torchqat")


class TensorQuantizer(nn.Module):
    """Quantizes (fake by default) or calibrates the tensors passing through it.

    Without an amax (no descriptor amax, not calibrated) it is dynamic: amax is taken from each
    input. With learn_amax, as in pytorch-quantization, the range is learned by `self.clip`
    (a Clip with learnable bounds `clip.clip_value_min/max`, PACT gradient, initialised to
    +-(descriptor amax or 1); `init_learn_amax()` copies `_amax` into them) and the quantizer
    uses amax = max(-clip_value_min, clip_value_max). `pre_quant_scale` (a `_pre_quant_scale`
    buffer once set) multiplies the input first, even when the quantizer is disabled.
    """

    # pytorch-quantization 2.1 switch: export with torch's fake_quantize ops (ONNX Q/DQ).
    use_fb_fake_quant = False
    # pytorch-quantization 2.2 switch, set by torchqat.enable_onnx_export().
    _enable_onnx_export = False

    def __init__(self, quant_desc=QuantDescriptor(), disabled=False, if_quant=True, if_clip=False, if_calib=False):
        super().__init__()
        if not isinstance(quant_desc, QuantDescriptor):
            raise TypeError(f"quant_desc must be a QuantDescriptor, got {type(quant_desc).__name__}")
        self._num_bits = quant_desc.num_bits
        self._fake_quant = quant_desc.fake_quant
        self._axis = quant_desc.axis
        self._scale_amax = quant_desc.scale_amax
        self._learn_amax = quant_desc.learn_amax
        self._unsigned = quant_desc.unsigned
        self._narrow_range = quant_desc.narrow_range
        self._block_size = quant_desc.block_size
        self._calib_method = quant_desc.calib_method
        self._name = quant_desc.name
        self._scale = 1.0 if quant_desc.fake_quant else None  # as pytorch-quantization
        self._disabled = disabled
        self._if_quant = if_quant
        self._if_clip = False
        self._if_calib = if_calib
        self._calibrator_obj = None
        if quant_desc.amax is not None:
            self._set_amax_storage(torch.tensor(quant_desc.amax, dtype=torch.float32))
        if self._learn_amax:
            # The descriptor refuses learn_amax with an axis, so the range is one number.
            init = 1.0 if quant_desc.amax is None else float(np.max(quant_desc.amax))
            self.clip = Clip(-init, init, learn_min=True, learn_max=True)
            self.enable_clip()
        if if_clip:
            self.enable_clip()

    # ----- calibrator slot -------------------------------------------------------------------
    @property
    def _calibrator(self):
        """The calibrator named by calib_method, made on first use."""
        if self._calibrator_obj is None:
            from ... import calib
            cls = calib.HistogramCalibrator if self._calib_method == "histogram" else calib.MaxCalibrator
            self._calibrator_obj = cls(self._num_bits, self.calibration_axis, self._unsigned)
        return self._calibrator_obj

    @_calibrator.setter
    def _calibrator(self, value):
        self._calibrator_obj = value

    @property
    def calibrator(self):
        """The calibrator made so far, or None (reading it makes none; `_calibrator` does)."""
        return self._calibrator_obj

    @calibrator.setter
    def calibrator(self, value):
        self._calibrator_obj = value

    # ----- properties --------------------------------------------------------------------------
    @property
    def num_bits(self):
        """Bits of the integer grid, or (4, 3) for FP8 E4M3."""
        return self._num_bits

    @num_bits.setter
    def num_bits(self, value):
        if isinstance(value, (tuple, list)):
            value = _check_num_bits(value)  # (4, 3), else TypeError
        elif isinstance(value, bool) or not isinstance(value, int) or not _C.MIN_NUM_BITS <= value <= _C.MAX_NUM_BITS:
            raise ValueError(f"num_bits must be an integer in [{_C.MIN_NUM_BITS}, {_C.MAX_NUM_BITS}], got {value!r}")
        if is_e4m3(value) and self._unsigned:
            raise ValueError("num_bits=(4, 3) (FP8 E4M3) is a signed format: this quantizer is unsigned")
        self._num_bits = value
        self._calibrator_obj = None  # a calibrator made for the old format would search the wrong grid

    @property
    def maxbound(self):
        """The largest grid value: 2^(b-1+unsigned) - 1 (448 for FP8 E4M3)."""
        if is_e4m3(self._num_bits):
            return 448.0
        return _C.quant_bound(self._num_bits, self._unsigned)

    @property
    def unsigned(self):
        """Whether the grid is unsigned."""
        return self._unsigned

    @unsigned.setter
    def unsigned(self, value):
        self._unsigned = bool(value)

    @property
    def narrow_range(self):
        """Whether the signed grid drops its lowest value."""
        return self._narrow_range

    @narrow_range.setter
    def narrow_range(self, value):
        self._narrow_range = bool(value)

    @property
    def axis(self):
        """The dims that keep their own amax (None: per tensor)."""
        return self._axis

    @property
    def block_size(self):
        """None, or the block along dim 1 of a 2-d input that shares one amax (amax [out, in / block_size])."""
        return self._block_size

    @property
    def calibration_axis(self):
        """The axis a calibrator of this quantizer keeps, over what calibration_input gives it: a blocked
        quantizer's calibrator sees the per-block abs-max [out, in / block_size] and keeps both dims."""
        return (0, 1) if self._block_size is not None else self._axis

    def calibration_input(self, inputs):
        """What this quantizer's calibrator collects from inputs: inputs, or their per-block abs-max."""
        if self._block_size is not None:
            return ops.abs_max_blocked(inputs, self._block_size)
        return inputs

    @property
    def disabled(self):
        """Whether the quantizer is bypassed (disable() / enable())."""
        return self._disabled

    @property
    def if_quant(self):
        """Whether forward quantizes (enable_quant() / disable_quant())."""
        return self._if_quant

    @property
    def if_calib(self):
        """Whether forward feeds the calibrator (enable_calib() / disable_calib())."""
        return self._if_calib

    @property
    def fake_quant(self):
        """Fake quantization (always True)."""
        return self._fake_quant

    @property
    def learn_amax(self):
        """Whether the range is learned through self.clip."""
        return self._learn_amax

    @property
    def scale(self):
        """1.0 in fake mode (pytorch-quantization's attribute)."""
        if self._fake_quant:
            logger.error("Fake quantize mode doesn't use scale explicitly!")
        return self._scale

    @property
    def step_size(self):
        """amax / maxbound: one step of the grid (None without amax)."""
        if self.amax is None:
            logger.error("step_size is undefined under dynamic amax mode!")
            return None
        return self.amax / self.maxbound

    @property
    def amax(self):
        """The amax buffer (None before calibration: dynamic mode); the setter registers or copies it."""
        if not hasattr(self, "_amax"):
            return None
        return self._amax

    @amax.setter
    def amax(self, value):
        if value is None:
            raise ValueError("amax cannot be set to None; use disable() to bypass the quantizer")
        value = torch.as_tensor(np.asarray(value.detach().cpu() if torch.is_tensor(value) else value),
                                dtype=torch.float32)
        _check_amax(value, self)
        self._set_amax_storage(value)

    def _set_amax_storage(self, value):
        """Registers the `_amax` buffer or copies into it."""
        _set_buffer(self, "_amax", "amax", value)

    @property
    def pre_quant_scale(self):
        """The scale the input is multiplied by before anything else (SmoothQuant), or None."""
        return getattr(self, "_pre_quant_scale", None)

    @pre_quant_scale.setter
    def pre_quant_scale(self, value):
        if value is None:
            raise ValueError("pre_quant_scale cannot be set to None")
        value = torch.as_tensor(np.asarray(value.detach().cpu() if torch.is_tensor(value) else value),
                                dtype=torch.float32)
        if not torch.isfinite(value).all():
            raise ValueError(f"pre_quant_scale of {self._display_name()} must be finite, got "
                             f"{value.flatten()[:8].tolist()}")
        _set_buffer(self, "_pre_quant_scale", "pre_quant_scale", value)

    # ----- state machine -----------------------------------------------------------------------
    def enable(self):
        """Quantizes again after disable()."""
        self._disabled = False

    def disable(self):
        """Bypasses the quantizer: forward returns its input."""
        self._disabled = True

    def enable_quant(self):
        """Turns quantization on (forward quantizes)."""
        self._if_quant = True

    def disable_quant(self):
        """Turns quantization off (forward passes the input through)."""
        self._if_quant = False

    def enable_calib(self):
        """Turns statistics collection on (the calibrator sees every input)."""
        if self._calibrator is None:
            raise ValueError("Calibrator was not created, cannot enable calibration.")
        self._if_calib = True

    def disable_calib(self):
        """Turns statistics collection off."""
        self._if_calib = False

    def enable_clip(self):
        """Clip stage on: the output is clipped to the learned range and the bounds train."""
        if not self._learn_amax:
            raise ValueError("learn_amax is False. Cannot enable clip.")
        self.clip.clip_value_min.requires_grad_(True)
        self.clip.clip_value_max.requires_grad_(True)
        self._if_clip = True

    def disable_clip(self):
        """Clip stage off: the learned bounds are frozen (quantization still uses them)."""
        self._if_clip = False
        if self._learn_amax:
            self.clip.clip_value_min.requires_grad_(False)
            self.clip.clip_value_max.requires_grad_(False)

    def load_calib_amax(self, *args, strict=True, **kwargs):
        """Writes the calibrator's amax into `_amax` (on the device of the existing amax, if any)."""
        cal = self._calibrator
        # has_data before compute_amax: HistogramCalibrator raises there when empty; calibrators
        # without has_data (user-written ones) signal "no data" by returning None.
        has_data = getattr(cal, "has_data", None)
        amax = cal.compute_amax(*args, **kwargs) if has_data is None or has_data() else None
        if amax is None:
            msg = (f"Calibrator returned None: the calibrator of {self._display_name()} has not seen any tensor. "
                   "Run data through the model in calib mode first")
            if strict:
                raise RuntimeError(msg + ", or pass strict=False to leave this quantizer uncalibrated.")
            logger.warning(msg + "; amax left unset.")
            return
        amax = amax.detach().to(torch.float32)
        _check_amax(amax, self)
        self._set_amax_storage(amax)

    def init_learn_amax(self):
        """Starts the learned range from `_amax`: clip bounds = -+amax (max(amax) if per channel)."""
        if not self._learn_amax:
            raise RuntimeError("Called init_learn_amax() on a quantizer with learn_amax=False.")
        if not hasattr(self, "_amax"):
            raise RuntimeError(f"{self._display_name()} has no amax to learn from: calibrate it first.")
        init = self._amax.detach()
        if init.numel() != 1:
            logger.warning("Per channel learned amax not supported. Initializing with max(amax).")
            init = init.max()
        with torch.no_grad():
            self.clip.clip_value_min.copy_(-init.reshape(self.clip.clip_value_min.shape))
            self.clip.clip_value_max.copy_(init.reshape(self.clip.clip_value_max.shape))

    def _display_name(self):
        return f"quantizer '{self._name}'" if self._name else "this quantizer"

    # ----- forward -----------------------------------------------------------------------------
    def _get_amax(self, inputs):
        if hasattr(self, "_amax"):
            amax = self._amax
        elif self._block_size is not None:
            amax = ops.abs_max_blocked(inputs, self._block_size).detach()
        else:
            keep = () if self._axis is None else tuple(a % inputs.dim() for a in self._axis)
            amax = dynamic_amax(inputs, keep)  # the batch's abs-max (a constant under ONNX export)
        if self._scale_amax is not None:
            amax = amax * self._scale_amax
        return amax

    def _op_axis(self, inputs, amax):
        """The one axis a per-channel amax belongs to (multi-axis amax must be broadcast-shaped)."""
        if amax.numel() == 1 or self._axis is None or len(self._axis) != 1:
            return None
        a = self._axis[0]
        if not -inputs.dim() <= a < inputs.dim():
            raise ValueError(f"axis {a} of {self._display_name()} is out of range for an input with "
                             f"{inputs.dim()} dimensions")
        return a % inputs.dim()

    def _quant_forward(self, inputs):
        if self._learn_amax:
            inputs = self.clip(inputs)
            amax = torch.maximum(-self.clip.clip_value_min, self.clip.clip_value_max).detach()
        else:
            amax = self._get_amax(inputs)
        if self._block_size is not None:  # fake quant only (the descriptor's rule)
            return ops.fake_quant_blocked(inputs, amax, self._block_size, self._num_bits, self._unsigned,
                                          self._narrow_range)
        axis = self._op_axis(inputs, amax)
        if is_e4m3(self._num_bits):  # always fake: FP8 values are floats (pytorch-quantization's scaled_e4m3)
            return ops.fake_quant_e4m3(inputs, amax, axis)
        if self._fake_quant:
            return ops.fake_quant(inputs, amax, self._num_bits, self._unsigned, self._narrow_range, axis)
        q, step = ops.quantize(inputs, amax, self._num_bits, self._unsigned, self._narrow_range, axis)
        self._scale = step.reciprocal()
        return q.to(inputs.dtype)

    def forward(self, inputs):
        if hasattr(self, "_pre_quant_scale"):  # SmoothQuant: scaled even when disabled, as in 2.2
            inputs = inputs * self._pre_quant_scale
        if self._disabled:
            return inputs
        if self._if_calib:
            with torch.no_grad():
                self._calibrator.collect(self.calibration_input(inputs.detach()))
        if self._if_quant:
            return self._quant_forward(inputs)
        if self._if_clip:
            return self.clip(inputs)
        return inputs

    # ----- state dict ----------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "_amax"
        if key in state_dict:
            value = state_dict[key]
            if not torch.is_tensor(value):
                error_msgs.append(f"{key}: expected a tensor, got {type(value).__name__}")
                return
            bad = not torch.isfinite(value).all() or (value < 0).any()
            if bad:
                error_msgs.append(f"{key}: amax must be finite and >= 0, got {value.flatten()[:8].tolist()}")
                return
            if not hasattr(self, "_amax"):
                # Register on the tensor's own device: a CPU-only load stays on the CPU.
                self._set_amax_storage(value.detach().to(torch.float32))
        key = prefix + "_pre_quant_scale"
        if key in state_dict:
            value = state_dict[key]
            if not torch.is_tensor(value) or not torch.isfinite(value).all():
                error_msgs.append(f"{key}: pre_quant_scale must be a finite tensor")
                return
            if not hasattr(self, "_pre_quant_scale"):
                self.register_buffer("_pre_quant_scale", value.detach().to(torch.float32).clone())
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self):
        """pytorch-quantization's tokens and order, e.g. `8bit fake per-tensor amax=2.5000 calibrator=MaxCalibrator scale=1.0 quant`."""
        if self._disabled:
            return "disabled"
        s = f"{'unsigned ' if self._unsigned else ''}{self._num_bits}bit"
        s += " narrow" if self._narrow_range else ""
        s += " fake" if self._fake_quant else ""
        s += " per-tensor" if self._axis is None else f" axis={self._axis[0] if len(self._axis) == 1 else self._axis}"
        amax = self.amax
        if amax is None:
            s += " amax=dynamic"
        elif amax.numel() == 1:
            s += f" amax={amax.item():.4f}"
        else:
            s += f" amax=[{amax.min().item():.4f}, {amax.max().item():.4f}]({amax.numel()})"
        if self._scale_amax:
            s += f" *{self._scale_amax}"
        if self.pre_quant_scale is not None:
            s += " pre_quant_scale"
        if self._learn_amax:
            s += " learned"
        if self._calibrator_obj is not None:
            s += f" calibrator={type(self._calibrator_obj).__name__}"
        else:
            s += f" calibrator={'HistogramCalibrator' if self._calib_method == 'histogram' else 'MaxCalibrator'}"
        if self._scale is not None:
            s += f" scale={self._scale if not torch.is_tensor(self._scale) else _short(self._scale)}"
        if self._if_quant:
            s += " quant"
        if self._if_clip:
            s += " clip"
        if self._if_calib:
            s += " calib"
        return s


def _short(t):
    return f"{t.item():.4f}" if t.numel() == 1 else f"[{t.min().item():.4f}, {t.max().item():.4f}]({t.numel()})"


def _set_buffer(quantizer, attr, what, value):
    """Registers buffer `attr` or copies `value` into it; its shape may not change (as in pytorch-quantization)."""
    if hasattr(quantizer, attr):
        current = getattr(quantizer, attr)
        if value.shape != current.shape:
            raise RuntimeError(f"Changing shape when setting {what} is not allowed. "
                               f"Current shape {tuple(current.shape)}, new shape {tuple(value.shape)}.")
        with torch.no_grad():
            current.copy_(value.to(current.device))
        return
    quantizer.register_buffer(attr, value.clone())


def _check_amax(amax, quantizer):
    if not torch.isfinite(amax).all():
        raise ValueError(f"amax of {quantizer._display_name()} must be finite, got {amax.flatten()[:8].tolist()}")
    if (amax < 0).any():
        raise ValueError(f"amax of {quantizer._display_name()} must be >= 0, got min {amax.min().item()}")
    if math.prod(amax.shape) == 0:
        raise ValueError(f"amax of {quantizer._display_name()} is empty")
