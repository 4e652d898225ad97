"""Training and evaluation loops (float training and QAT fine-tuning use the same loop)."""
import math
import time

import torch
from torch import nn

from . import data

__all__ = ["progress", "train", "evaluate", "predict_batches", "time_per_batch"]


def progress(iterable, desc, total=None, enabled=True):
    """tqdm around iterable when tqdm is installed and progress is enabled, else iterable itself."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, mininterval=0.5)


def _num_batches(n, batch_size, limit=None):
    b = math.ceil(n / batch_size)
    return b if limit is None else min(b, limit)


def train(model, x, y, *, epochs, batch_size, device, optimizer, lr, weight_decay=5e-4, momentum=0.9,
          schedule="onecycle", augment=True, generator=None, desc="train", show_progress=True,
          max_batches=None, freeze_bn=False):
    """Trains model on (x, y) in memory; returns the mean loss of the last epoch.

    optimizer: 'sgd' (Nesterov momentum) or 'adam'. schedule: 'onecycle' (warm-up then cosine, for
    training from scratch) or 'cosine' (cosine decay from lr, for fine-tuning).
    freeze_bn keeps BatchNorm running statistics fixed (the usual choice for short QAT fine-tuning).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    steps_per_epoch = _num_batches(x.shape[0], batch_size, max_batches)
    total = max(1, epochs * steps_per_epoch)
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.2)
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    else:
        raise ValueError(f"schedule must be 'onecycle' or 'cosine', got {schedule!r}")
    loss_fn = nn.CrossEntropyLoss()
    last = float("nan")
    for epoch in range(epochs):
        model.train()
        if freeze_bn:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        running, seen = 0.0, 0
        it = data.batches(x, y, batch_size, shuffle=True, generator=generator, augment=augment, limit=max_batches)
        bar = progress(it, f"{desc} {epoch + 1}/{epochs}", steps_per_epoch, show_progress)
        for xb, yb in bar:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * xb.shape[0]
            seen += xb.shape[0]
            if hasattr(bar, "set_postfix") and seen // xb.shape[0] % 20 == 0:
                bar.set_postfix(loss=f"{running / seen:.4f}", refresh=False)
        last = running / max(seen, 1)
    model.eval()
    return last


@torch.no_grad()
def evaluate(model, x, y, *, batch_size, device, desc="eval", show_progress=True):
    """Top-1 accuracy in percent of model on (x, y)."""
    model.eval()
    correct = 0
    it = data.batches(x, y, batch_size)
    for xb, yb in progress(it, desc, _num_batches(x.shape[0], batch_size), show_progress):
        pred = model(xb.to(device)).argmax(1)
        correct += (pred.cpu() == yb).sum().item()
    return 100.0 * correct / x.shape[0]


def predict_batches(run_batch, x, y, *, batch_size, desc="eval", show_progress=True):
    """Top-1 accuracy in percent of run_batch (a numpy-batch -> logits function, e.g. ONNX Runtime)."""
    correct = 0
    it = data.batches(x, y, batch_size)
    for xb, yb in progress(it, desc, _num_batches(x.shape[0], batch_size), show_progress):
        logits = run_batch(xb.numpy())
        correct += int((torch.from_numpy(logits).argmax(1) == yb).sum())
    return 100.0 * correct / x.shape[0]


def time_per_batch(fn, repeats=20, warmup=3, sync=None):
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1000.0 * times[len(times) // 2]
