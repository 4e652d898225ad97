"""MaxCalibrator: running abs-max, per tensor or per channel (the statistics live in C++)."""
import torch
import torch.distributed as dist

from .. import _C
from ..tensor_quant import is_e4m3
from . import _distributed

__all__ = ["MaxCalibrator"]


def _axis_list(axis):
    if axis is None:
        return []
    return list(axis) if isinstance(axis, (tuple, list)) else [axis]


def _impl_bits(num_bits):
    """The abs-max does not depend on the format: FP8 E4M3 (num_bits=(4, 3)) collects as 8 bits do."""
    return 8 if is_e4m3(num_bits) else num_bits


class MaxCalibrator:
    """Keeps the running abs-max of what it collects, over every dim not in axis.

    Args (pytorch-quantization's): num_bits, axis (None = per tensor; an int or tuple of the
    dims that keep their own amax), unsigned, track_amax (keep every batch's amax in `amaxs`).
    NaN or Inf in collected data raise ValueError instead of becoming the amax.
    """

    def __init__(self, num_bits=8, axis=None, unsigned=False, track_amax=False):
        self._num_bits = num_bits
        self._axis = axis
        self._unsigned = unsigned
        self._track_amax = track_amax
        self._impl = _C.MaxCalibrator(_impl_bits(num_bits), _axis_list(axis), unsigned, track_amax)

    # Picklable, so torch.save(model) and copy.deepcopy(model) work mid-calibration (the
    # per-batch history of track_amax is not carried over).
    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k != "_impl"}
        state["_calib_amax_state"] = self._impl.calib_amax()
        return state

    def __setstate__(self, state):
        state = dict(state)
        amax = state.pop("_calib_amax_state")
        self.__dict__.update(state)
        self._impl = _C.MaxCalibrator(_impl_bits(self._num_bits), _axis_list(self._axis), self._unsigned,
                                      self._track_amax)
        if amax is not None:
            self._impl.set_calib_amax(amax)

    @property
    def _calib_amax(self):
        """The running amax (keepdim-shaped per channel, 0-d per tensor), None before collect."""
        return self._impl.calib_amax()

    @property
    def amaxs(self):
        """Per-batch amaxes as numpy arrays when track_amax, else None."""
        return [a.numpy() for a in self._impl.amaxs()] if self._track_amax else None

    def collect(self, x):
        """Folds x's abs-max into the running amax; RuntimeError 'amax shape changed' on a new shape."""
        self._impl.collect(x)

    def reset(self):
        """Forgets the running max."""
        self._impl.reset()

    def has_data(self):
        """True once collect saw a non-empty tensor."""
        return self._impl.calib_amax() is not None

    def compute_amax(self, *args, **kwargs):
        """The running amax, or None before any collect (arguments are accepted and ignored, as before)."""
        return self._impl.compute_amax()

    def sync(self, group=None):
        """All-reduces the amax with MAX over the processes of group; a no-op when not distributed.

        Every process of group must call it. A process that collected nothing takes part with
        zeros of the others' shape (ranks that collected disagree on the shape: RuntimeError).
        """
        if not _distributed.active(group):
            return
        amax = self._impl.calib_amax()
        shape = None if amax is None else tuple(amax.shape)
        shapes = [None] * dist.get_world_size(group)
        dist.all_gather_object(shapes, shape, group=group)
        known = {s for s in shapes if s is not None}
        if not known:
            return
        if len(known) > 1:
            raise RuntimeError(f"MaxCalibrator.sync: amax shape changed! Ranks collected amax of shapes {shapes}")
        dev = _distributed.device(group)
        if amax is None:
            t = torch.zeros(known.pop(), dtype=torch.float32, device=dev)
        else:
            t = amax.float().to(dev, copy=True)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        self._impl.set_calib_amax(t if amax is None else t.to(amax.device))

    def __repr__(self):
        return (f"MaxCalibrator(num_bits={self._num_bits}, axis={self._axis}, unsigned={self._unsigned}, "
                f"track_amax={self._track_amax})")
