"""Shared by the benchmarks: one timer that is right on CPU and on CUDA, and a plain-text table."""
import platform
import statistics
import sys
import time

import torch

import torchqat


def timeit(fn, device, repeat, warmup=2):
    """Seconds of one fn() call, after warmup calls.

    CPU: the best of repeat wall-clock timings. Not the median: on a small shared machine another
    process often holds one of the cores, and a parallel region then waits a scheduler slice
    (4-8 ms) for its second thread; the best call is the one the machine let run.
    CUDA: the median of a pair of CUDA events around each call, queued back to back and read after
    one synchronize, so the figure is GPU time; host gaps (launch overhead, a host sync inside fn)
    count only where they leave the GPU idle, as they would in real use.
    """
    for _ in range(warmup):
        fn()
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


def measure(what, fn, device, repeat, warmup=2):
    """timeit, or None (shown as n/a, the reason on stderr) where fn raises: an op refusing a dtype."""
    try:
        return timeit(fn, device, repeat, warmup)
    except (RuntimeError, NotImplementedError) as e:
        print(f"n/a: {what}: {str(e).splitlines()[0]}", file=sys.stderr)
        return None


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
