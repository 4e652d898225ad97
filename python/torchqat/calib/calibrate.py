"""Model-level post-training calibration: run data through the model with every quantizer in
calib mode, merge statistics across processes, load amax, and restore quantization."""
import itertools

import torch

from .. import _C
from . import _distributed
from .histogram import HistogramCalibrator
from .max import MaxCalibrator

__all__ = ["calibrate", "calibrate_auto", "collect_stats", "compute_amax"]

# The methods and which calibrator / search each means are the C++ core's rules (calib/method.h),
# shared with torchqat::calibrate.
_METHODS = tuple(_C.calibrate_methods())


def _quantizers(model):
    """(name, quantizer) for every enabled TensorQuantizer, each once (shared ones too)."""
    from ..nn import TensorQuantizer
    seen = set()
    for name, mod in model.named_modules(remove_duplicate=False):
        if isinstance(mod, TensorQuantizer) and id(mod) not in seen and not mod.disabled:
            seen.add(id(mod))
            yield name, mod


def _fresh_calibrator(q, method, lockstep):
    """A calibrator with no statistics for q: histogram for per-tensor quantizers when method is
    a histogram search (keeping num_bins/skip_zeros of one already configured), max otherwise."""
    if not _C.calib_uses_histogram(method, q.axis is not None):
        return MaxCalibrator(q.num_bits, q.calibration_axis, q.unsigned)
    old = q.calibrator
    kw = {"num_bins": old._num_bins, "skip_zeros": old._skip_zeros} if isinstance(old, HistogramCalibrator) else {}
    cal = HistogramCalibrator(q.num_bits, None, q.unsigned, **kw)
    cal._lockstep = lockstep
    return cal


def _default_forward(model, batch, device):
    """model(batch): a tensor, the first item of a tuple/list (inputs, labels), or a dict of kwargs."""
    def move(t):
        return t.to(device) if torch.is_tensor(t) else t
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    if isinstance(batch, dict):
        return model(**{k: move(v) for k, v in batch.items()})
    return model(move(batch))


def _progress(iterable, total, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc="calibrating", leave=False)


def _device_of(model):
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def collect_stats(model, data, method="max", num_batches=None, progress=True, forward_fn=None, sync=None):
    """Runs batches of data through model (no_grad, eval mode) with every enabled quantizer
    collecting statistics into a fresh calibrator instead of quantizing; restores each
    quantizer's quant/calib switches and the model's training mode afterwards. Under
    torch.distributed (and sync not False) the statistics are then merged across ranks."""
    if not isinstance(method, str):
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    _C.check_calibrate_method(method, "calibrate")
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError(f"num_batches must be None or an integer >= 1, got {num_batches!r}")
    quantizers = list(_quantizers(model))
    if not quantizers:
        raise ValueError("the model has no enabled torchqat TensorQuantizer to calibrate")
    sync = _distributed.active() if sync is None else bool(sync) and _distributed.active()
    saved = [(q, q.if_quant, q.if_calib) for _, q in quantizers]
    for _, q in quantizers:
        q.calibrator = _fresh_calibrator(q, method, lockstep=sync)
        q.disable_quant()
        q.enable_calib()
    device = _device_of(model)
    forward = forward_fn or (lambda m, b: _default_forward(m, b, device))
    total = num_batches if num_batches is not None else (len(data) if hasattr(data, "__len__") else None)
    batches = data if num_batches is None else itertools.islice(data, num_batches)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in _progress(batches, total, progress):
                forward(model, batch)
    finally:
        for q, if_quant, if_calib in saved:
            (q.enable_quant if if_quant else q.disable_quant)()
            (q.enable_calib if if_calib else q.disable_calib)()
        model.train(was_training)
    if sync:
        for _, q in quantizers:  # same order on every rank: named_modules of the same model
            q.calibrator.sync()


def compute_amax(model, method="max", percentile=99.99, strict=True, **kwargs):
    """Loads every enabled quantizer's amax from its calibrator: histogram calibrators search with
    method ('entropy', 'percentile', 'mse'; percentile and kwargs such as start_bin, stride go to
    the search), max calibrators give their running max. A learn_amax quantizer's clip range
    starts from the calibrated amax (init_learn_amax)."""
    if method == "auto":
        raise ValueError("compute_amax: method 'auto' measures each candidate on recorded layer inputs; "
                         "use calibrate(..., method='auto') or calibrate_auto()")
    for name, q in _quantizers(model):
        cal = q.calibrator
        if cal is None:
            continue
        try:
            if isinstance(cal, HistogramCalibrator):
                search = _C.calib_histogram_search(method)
                q.load_calib_amax(search, percentile=percentile, strict=strict, **kwargs)
            else:
                q.load_calib_amax(strict=strict)
            if q.learn_amax and q.amax is not None:
                q.init_learn_amax()  # QAT learns the range from the calibrated one
        except (RuntimeError, ValueError) as e:
            raise type(e)(f"calibrating quantizer '{name}': {e}") from e


def calibrate(model, data, method="max", num_batches=None, percentile=99.99, progress=True, forward_fn=None, *,
              strict=True, sync=None, **kwargs):
    """Post-training calibration in one call; returns the model, quantizing with calibrated amax.

    data: an iterable of batches: tensors, (inputs, ...) tuples/lists, or dicts of keyword
    inputs; or pass forward_fn(model, batch) to run a batch yourself. method: 'max' (running
    abs-max, every quantizer) or 'entropy' / 'percentile' / 'mse' (histogram searches for
    per-tensor quantizers; per-channel ones use max), or 'auto' (per activation quantizer, the one
    of those whose amax costs its layer's output least: calibrate_auto). num_batches: stop after that many.
    strict: a quantizer that saw no data is an error (False: left as it was).
    sync: merge statistics across torch.distributed ranks (default: when it is initialised
    with several processes; then every rank must call calibrate with its own shard of the
    data, and all end with the amax one process would get from all the data).
    kwargs (start_bin, stride) go to the histogram search.
    """
    if method == "auto":
        calibrate_auto(model, data, num_batches=num_batches, progress=progress, forward_fn=forward_fn, strict=strict,
                       sync=sync, **kwargs)
        return model
    collect_stats(model, data, method=method, num_batches=num_batches, progress=progress, forward_fn=forward_fn,
                  sync=sync)
    compute_amax(model, method=method, percentile=percentile, strict=strict, **kwargs)
    return model


def calibrate_auto(model, data, num_batches=None, progress=True, forward_fn=None, *, strict=True, sync=None,
                   auto_batches=2):
    """calibrate(method="auto"), returning the per-quantizer choices (an AutoReport; printed to stderr
    when progress is on). The rule is torchqat.calib.auto's: for each activation quantizer, the amax
    among max / percentile 99.9, 99.99, 99.999 / mse / entropy of its histogram that gives the least
    output error of the layer holding it, measured on the inputs of the first auto_batches batches."""
    from ..nn import TensorQuantizer
    from .auto import InputRecorder, choose_amax
    recorder = InputRecorder(model, TensorQuantizer, batches=auto_batches)
    with recorder:
        collect_stats(model, data, method="auto", num_batches=num_batches, progress=progress, forward_fn=forward_fn,
                      sync=sync)
    sync = _distributed.active() if sync is None else bool(sync) and _distributed.active()
    return choose_amax(model, recorder, list(_quantizers(model)), strict=strict, progress=progress, sync=sync)
