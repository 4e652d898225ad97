"""Per-layer weight quantization error of a model: how much each layer's weights lose when
fake-quantized per channel (max calibration) at a given bit width.

`python -m torchqat.weight_report` runs it on a torchvision-free ResNet-style CNN.
"""
import argparse

import torch
from torch import nn

from . import ops

__all__ = ["weight_quant_errors", "main"]


def weight_quant_errors(model, num_bits=8):
    """[(layer name, shape, max |w|, relative L2 error, SQNR dB)] for every Conv/Linear weight."""
    rows = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)):
            continue
        w = mod.weight.detach()
        axis = 1 if isinstance(mod, nn.ConvTranspose2d) else 0
        dims = [d for d in range(w.dim()) if d != axis]
        amax = w.abs().amax(dim=dims)  # per-channel max calibration of a weight
        wq = ops.fake_quant(w, amax, num_bits, False, False, axis)
        err = torch.linalg.vector_norm(wq - w) / torch.linalg.vector_norm(w).clamp_min(1e-30)
        sqnr = -20.0 * torch.log10(err.clamp_min(1e-30))
        rows.append((name, tuple(w.shape), float(w.abs().max()), float(err), float(sqnr)))
    return rows


def _demo_model():
    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    return nn.Sequential(block(1, 32, 1), block(32, 64, 2), block(64, 128, 2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(128, 10))


def main(argv=None):
    """Command line: prints the per-channel weight report of a checkpoint."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bits", type=int, default=8, help="weight bit width (2..16)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    rows = weight_quant_errors(_demo_model(), args.bits)
    print(f"{'layer':<12}{'shape':<20}{'max|w|':>10}{'rel. error':>12}{'SQNR dB':>10}")
    for name, shape, wmax, err, sqnr in rows:
        print(f"{name:<12}{str(shape):<20}{wmax:>10.4f}{err:>12.2e}{sqnr:>10.2f}")


if __name__ == "__main__":
    main()
