"""Calibration benchmark: statistics collection in GB/s and the amax searches in ms per quantizer.

    TORCHQAT_LIB_DIR=build PYTHONPATH=python python bench/bench_calib.py [--numel N] [--no-model]

Rows (per device: CPU, and CUDA when available):
  copy        out.copy_(x) into a preallocated out: the bandwidth reference of "vs copy". Not x.clone():
              on CPU a 64 MB clone maps fresh pages every call (above glibc's mmap threshold) and runs
              at a fraction of memory bandwidth, which made every other row look faster than a copy
  histogram   torchqat.histogram_abs (2048 int64 bins) vs torch.histc (2048 float bins, which
              counts x, not |x|)
  collect     HistogramCalibrator.collect: abs-max, growth check (one host read), histogram
  abs_max     torchqat.abs_max per tensor and per channel vs torch.amax / x.abs().amax
GB/s is bytes of x / time (a copy also writes them: its GB/s counts the read side only).
Then the amax searches on a 2048-bin histogram (one quantizer; with --device cuda the counts are on
the GPU), and torchqat.calibrate on a ResNet-18-sized model (CPU).
"""
import argparse
import time

import torch

import _common
import torchqat
from _common import Spread, header, print_table, spread, timeit
from torchqat import calib


def _row(rows, device, what, impl, seconds, nbytes, copy_s=None):
    """seconds: the Spread of one call; GB/s and vs copy follow from it (vs copy: the medians' ratio)."""
    rows.append((device, what, impl, seconds, nbytes, copy_s))


def bench_device(device, numel, repeat, runs=_common.RUNS):
    rows = []
    x = torch.randn(numel, device=device) * 2
    nbytes = x.numel() * x.element_size()
    amax = x.abs().max().item()
    out = torch.empty_like(x)

    def t(fn):
        return timeit(fn, device, repeat, runs=runs)

    copy_s = t(lambda: out.copy_(x))
    _row(rows, str(device), "copy", "out.copy_(x)", copy_s, nbytes, copy_s)

    hist = torch.zeros(2048, dtype=torch.long, device=device)
    width = amax / 2048
    _row(rows, str(device), "histogram", "torchqat.histogram_abs",
         t(lambda: torch.ops.torchqat.histogram_abs(x, hist, width, False)), nbytes, copy_s)
    _row(rows, str(device), "histogram", "torch.histc(x, 2048, 0, max)", t(lambda: torch.histc(x, 2048, 0, amax)),
         nbytes, copy_s)
    cal = calib.HistogramCalibrator(8, None, False)
    _row(rows, str(device), "collect", "HistogramCalibrator.collect", t(lambda: cal.collect(x)), nbytes, copy_s)

    _row(rows, str(device), "abs_max", "torchqat.abs_max(x)", t(lambda: torch.ops.torchqat.abs_max(x, [])), nbytes,
         copy_s)
    _row(rows, str(device), "abs_max", "torch.amax(x) (no abs)", t(lambda: torch.amax(x)), nbytes, copy_s)
    _row(rows, str(device), "abs_max", "x.abs().amax()", t(lambda: x.abs().amax()), nbytes, copy_s)
    # Per channel: weights [K, C*k*k] (axis 0) and NCHW activations (axis 1).
    w = x.reshape(1024, -1)
    _row(rows, str(device), "abs_max", "torchqat.abs_max(w, [0])", t(lambda: torch.ops.torchqat.abs_max(w, [0])),
         nbytes, copy_s)
    _row(rows, str(device), "abs_max", "w.abs().amax(1, keepdim)", t(lambda: w.abs().amax(1, keepdim=True)), nbytes,
         copy_s)
    a = x[: (numel // (64 * 56 * 56)) * 64 * 56 * 56].reshape(-1, 64, 56, 56)
    ab = a.numel() * a.element_size()
    _row(rows, str(device), "abs_max", "torchqat.abs_max(act, [1])", t(lambda: torch.ops.torchqat.abs_max(a, [1])),
         ab, copy_s)
    _row(rows, str(device), "abs_max", "act.abs().amax((0,2,3), keepdim)",
         t(lambda: a.abs().amax((0, 2, 3), keepdim=True)), ab, copy_s)
    return rows


def bench_searches(repeat, device=torch.device("cpu"), runs=_common.RUNS):
    rows = []
    cal = calib.HistogramCalibrator(8, None, False)
    cal.collect(torch.randn(1 << 20, device=device))  # the counts stay on device; the search reads them
    bins = cal._calib_hist.numel()
    for method, kw in [("entropy", {}), ("mse", {}), ("percentile", {"percentile": 99.99})]:
        s = timeit(lambda: cal.compute_amax(method, **kw), device, repeat, runs=runs)
        rows.append((str(device), f"compute_amax {method}", f"{bins} bins, one quantizer", s, None, None))
    return rows


def _resnet18():
    from torch import nn
    from torchqat.nn import QuantConv2d, QuantLinear

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = QuantConv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = QuantConv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(QuantConv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    layers = [QuantConv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), QuantLinear(512, 1000)]
    return nn.Sequential(*layers)


def bench_model(batches, batch_size, runs=_common.RUNS):
    rows = []
    data = [torch.randn(batch_size, 3, 224, 224) for _ in range(batches)]
    nq = sum(isinstance(m, torchqat.nn.TensorQuantizer) for m in _resnet18().modules())
    for method in ("max", "entropy", "percentile", "mse"):
        times = []
        for _ in range(runs):  # a fresh model each run: calibrate() is a one-shot step
            model = _resnet18().eval()
            t0 = time.perf_counter()
            torchqat.calibrate(model, data, method=method, progress=False)
            times.append(time.perf_counter() - t0)
        rows.append(("cpu", f"calibrate {method}", f"ResNet-18, {nq} quantizers, {batches}x{batch_size} images",
                     Spread.of(times), None, None))
    model = _resnet18().eval()
    times = []
    with torch.no_grad():
        for _ in range(runs):
            t0 = time.perf_counter()
            for b in data:
                model(b)
            times.append(time.perf_counter() - t0)
    rows.append(("cpu", "float forward only", f"ResNet-18, {batches}x{batch_size} images (reference)",
                 Spread.of(times), None, None))
    return rows


def _cells(row):
    dev, what, impl, seconds, nbytes, copy_s = row
    gbs = spread(Spread(*(nbytes / v / 1e9 for v in (seconds.median, seconds.max, seconds.min)), seconds.runs),
                 ".2f") if nbytes else ""
    rel = f"{copy_s.median / seconds.median:.2f}" if nbytes and copy_s is not None else ""
    return [dev, what, impl, spread(seconds, ".3f", 1e3), gbs, rel]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--numel", type=int, default=1 << 24, help="elements of x (float32)")
    p.add_argument("--repeat", type=int, default=10, help="calls per run (a run's figure: the best call on CPU)")
    p.add_argument("--runs", type=int, default=_common.RUNS, help="runs per figure (median [min, max] shown)")
    p.add_argument("--no-model", action="store_true", help="skip the ResNet-18 calibrate() timing")
    p.add_argument("--model-batches", type=int, default=2)
    p.add_argument("--model-batch-size", type=int, default=8)
    p.add_argument("--device", choices=["cpu", "cuda"],
                   help="one device (default: CPU, and CUDA when present; the model timing is CPU only)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.runs < 1 or args.repeat < 1:
        p.error("--runs and --repeat must be >= 1")

    print(header())
    cpu, gpu = args.device in (None, "cpu"), args.device == "cuda" or (args.device is None and torch.cuda.is_available())
    rows = bench_device(torch.device("cpu"), args.numel, args.repeat, args.runs) if cpu else []
    if gpu:
        rows += bench_device(torch.device("cuda"), args.numel * 8, args.repeat * 5, args.runs)
    rows += bench_searches(args.repeat, torch.device("cuda" if args.device == "cuda" else "cpu"), args.runs)
    if not args.no_model and cpu:
        rows += bench_model(args.model_batches, args.model_batch_size, args.runs)
    print_table(f"Calibration: each figure median [min, max] of {args.runs} runs; vs copy = copy time / time "
                "(medians)", ["device", "what", "implementation", "ms", "GB/s", "vs copy"],
                [_cells(r) for r in rows], n_text=3)


if __name__ == "__main__":
    main()
