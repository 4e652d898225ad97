"""Shared by the benchmarks: one timer that is right on CPU and on CUDA and repeats every figure
(RUNS runs: median, min and max), and a plain-text table."""
import platform
import statistics
import sys
import time
from typing import NamedTuple

import torch

import torchqat


RUNS = 5  # every figure is measured this many times; tables print its median [min, max]


class Spread(NamedTuple):
    """A figure measured in several runs: the median, the smallest and the largest, and the count."""
    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, values):
        values = list(values)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def scaled(self, factor):
        """The spread of factor * figure (factor > 0)."""
        return Spread(self.median * factor, self.min * factor, self.max * factor, self.runs)


def _one_run(fn, device, repeat):
    """One run's figure, seconds per fn() call.

    CPU: the best of repeat wall-clock timings. Not the median: on a small shared machine another
    process often holds one of the cores, and a parallel region then waits a scheduler slice
    (4-8 ms) for its second thread; the best call is the one the machine let run.
    CUDA: the median of a pair of CUDA events around each call, queued back to back and read after
    one synchronize, so the figure is GPU time; host gaps (launch overhead, a host sync inside fn)
    count only where they leave the GPU idle, as they would in real use.
    """
    if device.type != "cuda":
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeat)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median([start.elapsed_time(end) for start, end in events]) / 1e3


def timeit(fn, device, repeat, warmup=2, runs=RUNS):
    """Spread of the seconds of one fn() call over `runs` runs (each as _one_run), after warmup calls."""
    return Spread.of(runs_of({"fn": fn}, device, repeat, warmup, runs)["fn"])


def runs_of(fns, device, repeat, warmup=2, runs=RUNS):
    """{name: [seconds per call, one per run]} for a dict of callables, the runs interleaved (run 1 of
    every fn, then run 2, ...) so that a busy spell of the machine hits them alike and ratios between
    them can be taken run by run."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            out[name].append(_one_run(fn, device, repeat))
    return out


def measure(what, fn, device, repeat, warmup=2, runs=RUNS):
    """timeit, or None (shown as n/a, the reason on stderr) where fn raises: an op refusing a dtype."""
    try:
        return timeit(fn, device, repeat, warmup, runs)
    except (RuntimeError, NotImplementedError) as e:
        print(f"n/a: {what}: {str(e).splitlines()[0]}", file=sys.stderr)
        return None


def spread(value, spec, factor=1.0):
    """A Spread as 'median [min, max]' (times factor, each formatted with spec); n/a for None."""
    if value is None:
        return "n/a"
    v = value.scaled(factor)
    return f"{v.median:{spec}} [{v.min:{spec}}, {v.max:{spec}}]"


def devices():
    """CPU, then CUDA when a GPU is present."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def header():
    """One line naming the software and the machine, printed before the tables."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return (f"torch {torch.__version__}, torchqat {torchqat.__version__}, CPU {cpu} ({torch.get_num_threads()} "
            f"threads), GPU {gpu}")


def num(value, spec):
    """value formatted with spec, or 'n/a' when it could not be measured."""
    return "n/a" if value is None else format(value, spec)


def print_table(title, headers, rows, n_text):
    """rows of strings under headers; the first n_text columns left-aligned, the others right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < n_text else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(f"\n{title}")
    print(line(headers))
    print("-" * len(line(headers)))
    for r in rows:
        print(line(r))
