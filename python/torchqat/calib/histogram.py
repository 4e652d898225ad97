"""HistogramCalibrator: an int64 histogram of |x| and the entropy / percentile / mse amax
searches, all in C++; this class adds pytorch-quantization's arguments and torch.distributed."""
import warnings

import torch
import torch.distributed as dist

from .. import _C
from ..tensor_quant import is_e4m3
from . import _distributed

__all__ = ["HistogramCalibrator"]

_METHODS = ("entropy", "percentile", "mse")


class HistogramCalibrator:
    """Histogram of |x| from 0 with bins of one width, grown by appending bins when later data
    exceeds the range; amax by compute_amax('entropy' | 'percentile' | 'mse'). Past 64 x num_bins
    bins (a range grown 64x), pairs of bins merge and the width doubles, so a first batch of tiny
    values cannot make the histogram unbounded (pytorch-quantization's grows without bound).

    Args (pytorch-quantization's): num_bits, axis (must be None: per tensor only), unsigned,
    num_bins (>= 2^(num_bits-1+unsigned)), grow_method (deprecated, ignored), skip_zeros (do not
    count exact zeros), torch_hist (True: the histogram above; False: pytorch-quantization's numpy
    path, bit for bit: the first batch's bins span its [min, max] (not from 0), later batches append
    bins of the same width and values below the first edge are dropped; compute_amax reads those
    edges. Read when collect is called, so setting `_torch_hist` afterwards, as scripts do, works).
    Counts are int64 (no saturation at 2^24). NaN or Inf in collected data raise ValueError.
    Unlike the predecessor, 'entropy' does not overwrite the stored first bin.
    """

    def __init__(self, num_bits=8, axis=None, unsigned=False, num_bins=2048, grow_method=None, skip_zeros=False,
                 torch_hist=True):
        if grow_method is not None:
            warnings.warn("HistogramCalibrator: grow_method is deprecated and ignored; the range always grows by "
                          "appending bins of the same width", DeprecationWarning, stacklevel=2)
        self._num_bits = num_bits
        self._axis = axis
        self._unsigned = unsigned
        self._num_bins = num_bins
        self._skip_zeros = skip_zeros
        self._torch_hist = torch_hist
        self._np_state = None  # (int64 counts, numpy-dtype edges) of the torch_hist=False path
        self._impl = self._make_impl()
        # Set by torchqat.calibrate under torch.distributed: every rank collects the same batches
        # in step, so the first batch's range can be agreed on (one bin width on every rank).
        self._lockstep = False

    def _make_impl(self):
        axis = self._axis
        axis_list = None if axis is None else (list(axis) if isinstance(axis, (tuple, list)) else [axis])
        # FP8 E4M3 (num_bits=(4, 3)): the C++ calibrator's format; its mse search quantizes to E4M3.
        e4m3 = is_e4m3(self._num_bits)
        return _C.HistogramCalibrator(8 if e4m3 else self._num_bits, axis_list, self._unsigned, self._num_bins,
                                      self._skip_zeros, e4m3)

    # Picklable, so torch.save(model) and copy.deepcopy(model) work mid-calibration: the
    # Python attributes plus the C++ counts, bin width and not-yet-binned zeros.
    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k != "_impl"}
        state["_impl_state"] = (self._impl.histogram(), self._impl.bin_width(), self._impl.pending_zeros())
        return state

    def __setstate__(self, state):
        state = dict(state)
        hist, width, zeros = state.pop("_impl_state")
        self.__dict__.update(state)
        self.__dict__.setdefault("_np_state", None)  # pickled before the torch_hist=False path existed
        self._impl = self._make_impl()
        if hist is not None:
            self._impl.set_state(hist, width)
        elif zeros:
            self._impl.collect(torch.zeros(()).expand(zeros))  # all-zero data so far: counted, not stored

    @property
    def _calib_hist(self):
        """The int64 counts (on the data's device), None before any non-zero data; numpy's int64 array
        on the torch_hist=False path."""
        if self._np_state is not None:
            return self._np_state[0].numpy()
        return self._impl.histogram()

    @property
    def _calib_bin_width(self):
        return self._impl.bin_width()

    @property
    def _calib_bin_edges(self):
        """Bin edges i * width (float64, CPU), None before any non-zero data; numpy's float32 edges on
        the torch_hist=False path."""
        if self._np_state is not None:
            return self._np_state[1].numpy()
        h = self._impl.histogram()
        if h is None:
            return None
        return torch.arange(h.numel() + 1, dtype=torch.float64) * self._impl.bin_width()

    def collect(self, x):
        """Adds |x| to the histogram (growing the range first if x exceeds it)."""
        if not self._torch_hist:
            hist, edges = self._np_state if self._np_state is not None else (None, None)
            self._np_state = _C.numpy_histogram_collect(x.detach(), hist, edges, self._num_bins, self._skip_zeros)
            return
        if self._lockstep and self._impl.bin_width() == 0.0 and _distributed.active():
            # Until a range is fixed, ranks agree on it: the first non-zero batch max over all
            # ranks sets one bin width everywhere, as one process seeing all the data would.
            m = torch.ops.torchqat.abs_max(x.detach(), []).reshape(1).to(_distributed.device(), torch.float64)
            dist.all_reduce(m, op=dist.ReduceOp.MAX)
            self._impl.reserve_range(float(m.item()))
        self._impl.collect(x)

    def reset(self):
        """Forgets every count collected."""
        self._np_state = None
        self._impl.reset()

    def has_data(self):
        """True once collect saw a value (all-zero data counts: its amax is 0)."""
        return self._np_state is not None or self._impl.histogram() is not None or self._impl.pending_zeros() > 0

    def compute_amax(self, method="entropy", *, stride=1, start_bin=128, percentile=99.99):
        """amax (a 0-d float32 tensor on the histogram's device) by method; RuntimeError before any collect.

        'entropy': the KL search over candidate ranges start_bin, start_bin+stride, ...;
        'mse': the candidate bin centre with the least count-weighted squared error;
        'percentile': the bin edge where the CDF reaches percentile, in (0, 100].
        """
        if method not in _METHODS:
            raise ValueError(f"HistogramCalibrator: unknown calibration method {method!r}; "
                             f"use one of {', '.join(repr(m) for m in _METHODS)}")
        if self._np_state is not None:
            return self._numpy_path_amax(method, stride, start_bin, percentile)
        amax = self._impl.compute_amax(method, start_bin, stride, percentile)  # validates the arguments first
        if amax is None:
            # An error, not None: a None amax would flow on and fail far away.
            raise RuntimeError("HistogramCalibrator.compute_amax: no data collected yet; call collect() with "
                               "at least one non-empty tensor first")
        return amax

    def _numpy_path_amax(self, method, stride, start_bin, percentile):
        """The searches on the numpy path's edges: the C++ searches give the bin index (unit width),
        the amax is the edge there ('mse': the float32 centre, from the edges in C++)."""
        counts = self._np_state[0].tolist()
        edges = self._np_state[1]
        e4m3 = is_e4m3(self._num_bits)
        if method == "mse":
            amax = _C.amax_mse_edges(counts, edges.tolist(), 8 if e4m3 else self._num_bits, self._unsigned, start_bin,
                                     stride, e4m3)
            return torch.tensor(amax, dtype=torch.float32)
        if method == "entropy" and e4m3:  # the C++ calibrator's refusal (E214), for the numpy path
            raise ValueError("HistogramCalibrator: the entropy method merges bins into integer levels and is not "
                             "defined for FP8 E4M3 (num_bits=(4, 3)); use 'mse' or 'percentile'")
        if method == "entropy":
            i = _C.amax_entropy(counts, 1.0, self._num_bits, self._unsigned, start_bin, stride)
        else:
            i = _C.amax_percentile(counts, 1.0, percentile)
        return edges[int(i)].to(torch.float32)  # the predecessor's torch.tensor(edge.item())

    def sync(self, group=None):
        """Merges the histograms of every process of group (all must call it): ranges are unified by
        growing every histogram to the largest bin count, then counts are summed. A no-op when not
        distributed.

        Histograms must share one bin width, which torchqat.calibrate arranges (lockstep range);
        ranks that collected on their own have different widths: their counts are re-binned onto
        the widest one by bin left edge (an approximation; a warning says so).
        """
        if not _distributed.active(group):
            return
        if self._np_state is not None:
            raise NotImplementedError("HistogramCalibrator.sync: torch_hist=False histograms (numpy's bins) are not "
                                      "synced across processes; calibrate with torch_hist=True")
        dev = _distributed.device(group)
        h = self._impl.histogram()
        mine = self._impl.bin_width() if h is not None else 0.0
        width = torch.tensor([mine, -mine], dtype=torch.float64, device=dev)
        dist.all_reduce(width, op=dist.ReduceOp.MAX, group=group)
        w, w_min = float(width[0]), -float(width[1])
        if w == 0.0:
            return  # nobody saw a non-zero value
        counts = h.to(dev) if h is not None else torch.zeros(1, dtype=torch.long, device=dev)
        if h is None and not self._skip_zeros:
            counts[0] = self._impl.pending_zeros()  # zeros seen before any range: bin 0 everywhere
        if 0.0 < w_min < w and h is not None and mine != w:
            warnings.warn(f"HistogramCalibrator.sync: ranks binned with different widths ({w_min} .. {w}); "
                          "re-binning onto the widest, which is approximate. Calibrate with torchqat.calibrate "
                          "to bin with one width on every rank.", stacklevel=2)
            counts = _C.rebin_counts(counts, mine, w)
        n = torch.tensor([counts.numel()], dtype=torch.long, device=dev)
        dist.all_reduce(n, op=dist.ReduceOp.MAX, group=group)
        full = torch.zeros(int(n.item()), dtype=torch.long, device=dev)
        full[:counts.numel()] = counts
        dist.all_reduce(full, op=dist.ReduceOp.SUM, group=group)
        self._impl.set_state(full.to(h.device if h is not None else dev), w)

    def __repr__(self):
        return (f"HistogramCalibrator(num_bits={self._num_bits}, axis={self._axis}, unsigned={self._unsigned}, "
                f"num_bins={self._num_bins}, skip_zeros={self._skip_zeros})")

