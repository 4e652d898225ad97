"""Fake-quant benchmark: torchqat.fake_quant against torch's fake_quantize_per_{tensor,channel}_affine and
a copy of the same bytes; torchqat.abs_max against torch's reductions. All in one run, side by side.

    TORCHQAT_LIB_DIR=build PYTHONPATH=python python bench/bench_fake_quant.py [--repeat N] [--act N,C,H,W]

Cases, each in fp32, bf16 and fp16, on CPU and on CUDA when a GPU is present:
  per tensor       activation x [N,C,H,W] (fp32: CPU 32x64x56x56 = 25.7 MB, CUDA 64x256x56x56 = 205 MB;
                   bf16/fp16 double N, so every dtype moves the same bytes), one amax
  per channel ax1  the same activation, one amax per channel C (axis 1)
  per channel ax0  a conv weight [512,256,3,3] (4.7 MB fp32: it stays in a large CPU L3 / the GPU's L2),
                   one amax per output channel (axis 0)
On CPU x and y together exceed a 32 MB L3, yet each stays under glibc's largest mmap threshold (32 MB),
so the output buffer is reused rather than faulted in afresh on every call (clone shows that cost).

Fake-quant table (bytes moved: n = numel * itemsize):
  copy_          out.copy_(x) into a preallocated out, 2n: the bandwidth reference of "% copy"
  clone          x.clone(), 2n: the copy plus the output allocation every out-of-place op pays
  fwd            y = op(x), 2n (read x, write y)
  fwd+bwd        y = op(x); dx = autograd.grad(y, x, g) with x.requires_grad (autograd.grad rather than
                 y.backward, so no x.grad accumulation pass is timed), 5n
  5-pass ideal   the floor of fwd+bwd: fwd reads x and writes y, bwd reads x (torch: its mask) and g
                 and writes dx, five tensor passes at copy_ bandwidth = 2.5 x the copy_ time
  vs torch       torch's time / this time for the same case, dtype and pass (> 1: faster than torch)
  % copy         GB/s / copy_ GB/s; for fwd+bwd rows this is the 5-pass ideal time / this time
Amax table (bytes: n, x is read once):
  torchqat.abs_max against x.abs().amax() and torch.aminmax(x) (per tensor) or x.abs().amax(dims)
  (per channel); "% read" is GB/s over the faster of x.sum() and torch.amax(x), torch's plain reads.
A dtype torch's kernel refuses (half types per channel on CPU in some torch versions) shows n/a.
On CUDA, torchqat's forward checks amax values on the host (one device sync per call) unless
torchqat.set_cuda_amax_checks(False): the rows "torchqat, no amax check" show what that costs.
"""
import argparse

import torch

import torchqat
import _common
from _common import devices, header, measure, num, print_table, spread, timeit

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHT_SHAPE = (512, 256, 3, 3)


def _unchecked(fq):
    """fq with torchqat's host-side amax check (one device sync on CUDA) switched off for the call."""
    def run(t):
        torchqat.set_cuda_amax_checks(False)
        try:
            return fq(t)
        finally:
            torchqat.set_cuda_amax_checks(True)
    return run


def _fake_quants(x, axis):
    """[(name, fq)]: the fake-quant implementations compared, with the same 8-bit range and amax."""
    dims = [d for d in range(x.dim()) if d != axis]
    amax = x.detach().abs().float().amax(dims) if axis is not None else x.detach().abs().float().amax()
    tq = lambda t: torch.ops.torchqat.fake_quant(t, amax, 8, False, False, axis)  # noqa: E731
    if axis is None:
        scale = amax.item() / 127
        native = lambda t: torch.fake_quantize_per_tensor_affine(t, scale, 0, -128, 127)  # noqa: E731
    else:
        scale = amax / 127
        zero = torch.zeros_like(amax, dtype=torch.int32)
        native = lambda t: torch.fake_quantize_per_channel_affine(t, scale, zero, axis, -128, 127)  # noqa: E731
    impls = [("torchqat", tq), ("torch", native)]
    if x.is_cuda:
        impls.append(("torchqat, no amax check", _unchecked(tq)))
    return impls


def _fwd_bwd(fq, x, g):
    xg = x.detach().requires_grad_()
    return lambda: torch.autograd.grad(fq(xg), xg, g)


def bench_fake_quant(x, axis, device, repeat, runs=_common.RUNS):
    """Rows (pass, impl, seconds, bytes, vs torch, fraction of copy_ GB/s) for one case and dtype."""
    n = x.numel() * x.element_size()
    out = torch.empty_like(x)
    copy_s = timeit(lambda: out.copy_(x), device, repeat, runs=runs)
    rows = [("copy_", "out.copy_(x)", copy_s, 2 * n, None),
            ("clone", "x.clone()", timeit(x.clone, device, repeat, runs=runs), 2 * n, None)]
    g = torch.randn_like(x)
    impls = _fake_quants(x, axis)
    for what, nbytes, make in [("fwd", 2 * n, lambda fq: (lambda: fq(x))),
                               ("fwd+bwd", 5 * n, lambda fq: _fwd_bwd(fq, x, g))]:
        times = {name: measure(f"{what} {name} {x.dtype}", make(fq), device, repeat, runs=runs) for name, fq in impls}
        for name, s in times.items():
            vs = None if s is None or times["torch"] is None else times["torch"].median / s.median
            rows.append((what, name, s, nbytes, vs))
        if what == "fwd+bwd":
            rows.append((what, "5-pass ideal (2.5 x copy_)", copy_s.scaled(2.5), nbytes, None))
    copy_gbs = 2 * n / copy_s.median
    return [r + (None if r[2] is None else r[3] / r[2].median / copy_gbs,) for r in rows]


def bench_abs_max(x, axis, device, repeat, runs=_common.RUNS):
    """Rows [impl, seconds, bytes, fraction of read] for one case and dtype."""
    n = x.numel() * x.element_size()
    dims = [d for d in range(x.dim()) if d != axis]
    read = {"x.sum()": timeit(x.sum, device, repeat, runs=runs),
            "torch.amax(x)": timeit(lambda: torch.amax(x), device, repeat, runs=runs)}
    if axis is None:
        impls = {"torchqat.abs_max(x)": lambda: torch.ops.torchqat.abs_max(x, []),
                 "x.abs().amax()": lambda: x.abs().amax(),
                 "torch.aminmax(x)": lambda: torch.aminmax(x)}
    else:
        impls = {f"torchqat.abs_max(x, [{axis}])": lambda: torch.ops.torchqat.abs_max(x, [axis]),
                 f"x.abs().amax({tuple(dims)})": lambda: x.abs().amax(dims, keepdim=True)}
    times = {name: measure(f"{name} {x.dtype}", fn, device, repeat, runs=runs) for name, fn in impls.items()}
    times.update(read)
    best_read = n / min(r.median for r in read.values())
    return [[name, s, n, None if s is None else n / s.median / best_read] for name, s in times.items()]


def _ms(s):
    return spread(s, ".3f", 1e3)


def _gbs(nbytes, s):
    return num(None if s is None else nbytes / s.median / 1e9, ".2f")


def _pct(fraction):
    return num(None if fraction is None else fraction * 100, ".0f")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=10,
                   help="timed calls per run (CPU: the best of them; CUDA: the median of twice as many)")
    p.add_argument("--runs", type=int, default=_common.RUNS, help="runs per figure (median [min, max] shown)")
    p.add_argument("--act", help="fp32 activation shape N,C,H,W (default CPU 32,64,56,56; CUDA 64,256,56,56)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="one device (default: CPU, and CUDA when present)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    print(header())
    fq_rows, amax_rows = [], []
    for device in [torch.device(args.device)] if args.device else devices():
        shape = tuple(int(v) for v in args.act.split(",")) if args.act else (
            (64, 256, 56, 56) if device.type == "cuda" else (32, 64, 56, 56))
        repeat = args.repeat * (2 if device.type == "cuda" else 1)
        torch.manual_seed(0)
        weight = torch.randn(WEIGHT_SHAPE, device=device) * 0.05
        for dname, dtype in DTYPES.items():
            act = torch.randn((shape[0] * 4 // dtype.itemsize, *shape[1:]), device=device, dtype=dtype) * 2
            for case, x, axis in [("per tensor", act, None), ("per channel ax1", act, 1),
                                  ("per channel ax0", weight.to(dtype), 0)]:
                key = [device.type, f"{case} {'x'.join(map(str, x.shape))}", dname]
                for what, impl, s, nbytes, vs, frac in bench_fake_quant(x, axis, device, repeat, args.runs):
                    fq_rows.append(key + [what, impl, _ms(s), _gbs(nbytes, s), num(vs, ".2f"), _pct(frac)])
                for impl, s, nbytes, frac in bench_abs_max(x, axis, device, repeat, args.runs):
                    amax_rows.append(key + [impl, _ms(s), _gbs(nbytes, s), _pct(frac)])
    print_table(f"fake quant (ms per call: median [min, max] of {args.runs} runs; GB/s, vs torch, % copy: of the "
                "medians; GB/s: bytes read + written)",
                ["device", "case", "dtype", "pass", "implementation", "ms", "GB/s", "vs torch", "% copy"], fq_rows, 5)
    print_table(f"amax reduction (ms: median [min, max] of {args.runs} runs; GB/s: bytes read, of the median)",
                ["device", "case", "dtype", "implementation", "ms", "GB/s", "% read"], amax_rows, 4)


if __name__ == "__main__":
    main()
