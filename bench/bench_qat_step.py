"""QAT training-step benchmark: one SGD step of a ResNet as the float model, quantized with torchqat, and
quantized with torch's own fake-quant ops; ms per step and the ratio to the float step, in one run.

    TORCHQAT_LIB_DIR=build PYTHONPATH=python python bench/bench_qat_step.py [--device cuda] [--arch resnet50]
        [--batch 64] [--size 224] [--bf16 | --no-bf16] [--channels-last | --no-channels-last] [--steps N]
        [--compile | --no-compile]

Defaults per device: CUDA ResNet-50, batch 64, 224x224, bf16 autocast, channels_last;
CPU ResNet-18, batch 8, 112x112, fp32, contiguous (small enough for a 2-core machine).
--compile (default on CUDA; on CPU opt-in, inductor takes minutes per model on 2 cores) adds the
float and torchqat models under torch.compile(fullgraph=True), the whole step's forward and backward
compiled (the optimizer step stays eager); the first (warm-up) step pays the compilation.
A step: zero_grad, forward, cross-entropy, backward, SGD (momentum 0.9) update, on one fixed random batch.
Variants, all from the same float weights:
  float         the model as built
  torchqat      torchqat.quantize_model with every Conv2d/Linear included (QuantConv2d/QuantLinear:
                8-bit, per-channel weight amax on axis 0, per-tensor input amax); amax from
                torchqat.calibrate(method="max") on one batch
  torch native  every Conv2d/Linear wrapped so its input goes through torch.fake_quantize_per_tensor_affine
                and its weight through torch.fake_quantize_per_channel_affine, scales fixed to the torchqat
                model's calibrated amax / 127: the same quantization on torch's kernels
  torchqat, no amax check  (CUDA only) torchqat under torchqat.set_cuda_amax_checks(False); by default
                its forward checks every amax on the host, one device sync per quantizer call
  float, compiled / torchqat, compiled  (--compile) the float and torchqat models under torch.compile
Pooling stays float in both quantized variants. torchvision's model is used when torchvision imports
(a build matching this torch); otherwise bench/_resnet.py, the same architecture and layer names.
"""
import argparse
import copy

import torch
from torch import nn
from torch.nn import functional as F

import torchqat
import _common
from _common import Spread, devices, header, print_table, runs_of, spread

DEFAULTS = {"cuda": dict(arch="resnet50", batch=64, size=224, bf16=True, channels_last=True, compile=True),
            "cpu": dict(arch="resnet18", batch=8, size=112, bf16=False, channels_last=False, compile=False)}


class TorchFakeQuant(nn.Module):
    """A Conv2d or Linear whose input and weight pass through torch's fake-quant ops with fixed scales."""

    def __init__(self, layer, input_amax, weight_amax):
        super().__init__()
        self.layer = layer
        self.input_scale = float(input_amax) / 127
        scale = weight_amax.detach().reshape(-1).float() / 127
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero", torch.zeros_like(scale, dtype=torch.int32))

    def forward(self, x):
        x = torch.fake_quantize_per_tensor_affine(x, self.input_scale, 0, -128, 127)
        w = torch.fake_quantize_per_channel_affine(self.layer.weight, self.weight_scale, self.weight_zero, 0, -128,
                                                   127)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)


def build_model(arch):
    """(model, where it came from): torchvision's when it imports, else bench/_resnet.py's."""
    try:
        import torchvision
        return getattr(torchvision.models, arch)(), f"torchvision {torchvision.__version__}"
    except (ImportError, OSError, RuntimeError):  # absent, or built for another torch
        import _resnet
        return getattr(_resnet, arch)(), "bench/_resnet.py"


def _layers(model):
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def torchqat_model(model, batch):
    """A copy of model with every Conv2d/Linear quantized by torchqat and max-calibrated on batch."""
    q = copy.deepcopy(model)
    torchqat.quantize_model(q, include=_layers(model))
    torchqat.calibrate(q, [batch], method="max", progress=False)
    return q


def native_model(model, calibrated):
    """A copy of model with every Conv2d/Linear wrapped in TorchFakeQuant, scales from calibrated's amax."""
    m = copy.deepcopy(model)
    for name in _layers(model):
        parent, _, attr = name.rpartition(".")
        q = calibrated.get_submodule(name)
        setattr(m.get_submodule(parent), attr,
                TorchFakeQuant(m.get_submodule(name), q._input_quantizer.amax, q._weight_quantizer.amax))
    return m


def _no_amax_check(model):
    """model's forward with torchqat's host-side amax checks switched off."""
    def run(x):
        torchqat.set_cuda_amax_checks(False)
        try:
            return model(x)
        finally:
            torchqat.set_cuda_amax_checks(True)
    return run


def step_fn(model, forward, x, target, bf16):
    """One training step of model (run through forward) as a closure."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), target)
        loss.backward()
        opt.step()
    return step


def bench_device(device, cfg, steps, warmup, runs=_common.RUNS):
    """Table rows [device, config, variant, ms/step, vs float] for one device and configuration: each
    median [min, max] over runs; the variants' runs interleave, and vs float is taken run by run."""
    torch.manual_seed(0)
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    model, source = build_model(cfg["arch"])
    model = model.to(device, memory_format=fmt).train()
    x = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=device).to(memory_format=fmt)
    target = torch.randint(0, 1000, (cfg["batch"],), device=device)
    tq = torchqat_model(model, x).train()
    native = native_model(model, tq).train()
    variants = [("float", model, model), ("torchqat", tq, tq), ("torch native", native, native)]
    if device.type == "cuda":
        variants.append(("torchqat, no amax check", tq, _no_amax_check(tq)))
    if cfg.get("compile"):
        torch._dynamo.reset()
        variants += [("float, compiled", model, torch.compile(model, fullgraph=True)),
                     ("torchqat, compiled", tq, torch.compile(tq, fullgraph=True))]
    nq = sum(isinstance(m, torchqat.nn.TensorQuantizer) for m in tq.modules())
    config = (f"{cfg['arch']} ({source}, {nq} quantizers), bs {cfg['batch']}, {cfg['size']}x{cfg['size']}, "
              f"{'bf16 autocast' if cfg['bf16'] else 'fp32'}{', channels_last' if cfg['channels_last'] else ''}")
    per_run = runs_of({name: step_fn(m, fwd, x, target, cfg["bf16"]) for name, m, fwd in variants}, device, steps,
                      warmup, runs)
    return [[device.type, config, name, spread(Spread.of(s), ".1f", 1e3),
             spread(Spread.of(a / b for a, b in zip(s, per_run["float"])), ".2f")]
            for name, s in per_run.items()]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], help="one device (default: CPU, and CUDA when present)")
    p.add_argument("--arch", choices=["resnet18", "resnet50"])
    p.add_argument("--batch", type=int)
    p.add_argument("--size", type=int, help="image height and width")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="bf16 autocast")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="add torch.compile(fullgraph=True) variants (default: on CUDA only)")
    p.add_argument("--steps", type=int, help="timed steps (default CPU 3, CUDA 20)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default CPU 1, CUDA 5)")
    p.add_argument("--runs", type=int, default=_common.RUNS, help="runs per figure (median [min, max] shown)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    print(header())
    rows = []
    for device in [torch.device(args.device)] if args.device else devices():
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        cfg = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in DEFAULTS[device.type].items()}
        steps = args.steps or (20 if cuda else 3)
        warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
        rows += bench_device(device, cfg, steps, warmup, args.runs)
    print_table(f"QAT training step (median [min, max] of {args.runs} runs; a run: CPU best, CUDA median of the "
                "timed steps; vs float: per run, this variant / the float step of the same run)",
                ["device", "config", "variant", "ms/step", "vs float"], rows, 3)


if __name__ == "__main__":
    main()
