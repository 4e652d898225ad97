"""The whole flow on Fashion-MNIST: float training -> PTQ (max, entropy, percentile, mse) -> QAT ->
QDQ ONNX -> ONNX Runtime, the same for FP8 E4M3 and for 4-bit weights (w4a8), then one table and one
figure.

    python -m torchqat.demo [--epochs 4] [--qat-epochs 1] [--device auto|cpu|cuda] [--out DIR] ...
"""
import argparse
import collections
import copy
import json
import os
import sys
import time

import torch

from . import data, onnx_run, report, train
from .model import FashionResNet, count_parameters
from .quantize import E4M3, quantize

__all__ = ["main", "parse_args"]

PTQ_METHODS = ("max", "entropy", "percentile", "mse")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m torchqat.demo",
        description="torchqat end to end on Fashion-MNIST: trains a small ResNet (or reuses the cached one), "
                    "calibrates it (max, entropy, percentile, mse), fine-tunes it with QAT, exports QDQ ONNX, "
                    "runs it in ONNX Runtime, does the same (max calibration) for FP8 E4M3 (opset 19) and for 4-bit "
                    "weights with 8-bit activations (w4a8, opset 21), and prints one table.")
    p.add_argument("--epochs", type=int, default=None, help="float training epochs (default 4; 1 with --quick)")
    p.add_argument("--qat-epochs", type=int, default=1, help="QAT fine-tuning epochs of int8 and FP8 (default 1)")
    p.add_argument("--lowbit-qat-epochs", type=int, default=None,
                   help="QAT epochs of the 4-bit-weight setting (default 2; 1 with --quick)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train and evaluate in PyTorch (auto: cuda when present and torchqat has its "
                        "CUDA kernels); ONNX Runtime always runs on the CPU")
    p.add_argument("--out", default="torchqat_demo_out", help="output folder for the ONNX model, plot and results")
    p.add_argument("--cache-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "torchqat"),
                   help="where the trained float checkpoint is kept and reused (default ~/.cache/torchqat)")
    p.add_argument("--data-dir", default=data.DEFAULT_DATA_DIR, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (evaluation uses 4x)")
    p.add_argument("--calib-batches", type=int, default=None,
                   help="calibration batches of --batch-size training images (default 16; 2 with --quick)")
    p.add_argument("--width", type=int, default=None, help="channels of the first stage (default 32; 8 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="tiny subset and model, for tests: a couple of seconds per step, accuracy meaningless")
    p.add_argument("--retrain", action="store_true", help="train the float model even when a checkpoint is cached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 4
    if args.lowbit_qat_epochs is None:
        args.lowbit_qat_epochs = 1 if args.quick else 2
    if args.calib_batches is None:
        args.calib_batches = 2 if args.quick else 16
    if args.width is None:
        args.width = 8 if args.quick else 32
    for name in ("epochs", "batch_size", "calib_batches", "width"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("qat_epochs", "lowbit_qat_epochs"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    return args


def _device(choice):
    import torchqat
    cuda_ok = torch.cuda.is_available() and torchqat.cuda_compiled()
    if choice == "auto":
        return torch.device("cuda" if cuda_ok else "cpu")
    if choice == "cuda" and not cuda_ok:
        why = "no CUDA GPU is visible to torch" if not torch.cuda.is_available() else \
            "this torchqat build has no CUDA kernels (rebuild with nvcc present)"
        raise SystemExit(f"--device cuda: {why}")
    return torch.device(choice)


def _log(msg):
    print(msg, flush=True)


def _input_amax(model):
    """[(quantizer name, amax)] of the per-tensor (activation) quantizers, model order, shared ones once."""
    from ..nn import TensorQuantizer
    out, seen = [], set()
    for name, m in model.named_modules():
        if isinstance(m, TensorQuantizer) and m.axis is None and id(m) not in seen and m.amax is not None:
            seen.add(id(m))
            out.append((name, float(m.amax)))
    return out


def _float_model(args, device, x_train, y_train):
    """The trained float model: from the cache folder when there, else trained now and cached."""
    tag = f"fashion_resnet_w{args.width}_e{args.epochs}_b{args.batch_size}_s{args.seed}{'_quick' if args.quick else ''}"
    path = os.path.join(args.cache_dir, tag + ".pt")
    model = FashionResNet(args.width)
    if os.path.exists(path) and not args.retrain:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["state_dict"])
        _log(f"float model: reusing {path} (trained {ckpt.get('train_seconds', 0):.0f} s)")
        return model.to(device), 0.0, path
    _log(f"float model: training {count_parameters(model) / 1e6:.2f}M parameters for {args.epochs} epoch(s) "
         f"on {device} (cached as {path})")
    model.to(device)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    train.train(model, x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, device=device,
                optimizer="sgd", lr=0.1, weight_decay=5e-4, schedule="onecycle", generator=g, desc="fp32 train",
                show_progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    os.makedirs(args.cache_dir, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}"
    torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "width": args.width,
                "epochs": args.epochs, "seed": args.seed, "train_seconds": seconds}, tmp)
    os.replace(tmp, path)  # atomic: a concurrent run never sees half a file
    return model, seconds, path


def main(argv=None):
    args = parse_args(argv)
    from .. import calib as tq_calib

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    device = _device(args.device)
    show = not args.no_progress
    os.makedirs(args.out, exist_ok=True)
    eval_bs = 4 * args.batch_size

    train_limit, test_limit = (2048, 1024) if args.quick else (None, None)
    x_train, y_train = data.load_split("train", args.data_dir, train_limit)
    x_test, y_test = data.load_split("t10k", args.data_dir, test_limit)
    _log(f"Fashion-MNIST: {x_train.shape[0]} training / {x_test.shape[0]} test images from {args.data_dir}; "
         f"device {device}, {torch.get_num_threads()} CPU threads")

    def evaluate(model, desc):
        return train.evaluate(model, x_test, y_test, batch_size=eval_bs, device=device, desc=desc, show_progress=show)

    def calib_data():
        g = torch.Generator().manual_seed(args.seed + 1)
        return (xb for xb, _ in data.batches(x_train, y_train, args.batch_size, shuffle=True, generator=g,
                                             limit=args.calib_batches))

    def qat(model, epochs, lr, desc, seed_offset):
        g = torch.Generator().manual_seed(args.seed + seed_offset)
        train.train(model, x_train, y_train, epochs=epochs, batch_size=args.batch_size, device=device,
                    optimizer="sgd", lr=lr, weight_decay=5e-5, schedule="cosine", generator=g, desc=desc,
                    show_progress=show, freeze_bn=True)

    timings = {}

    # 1. float model ---------------------------------------------------------------------------------
    t = time.perf_counter()
    fp32_model, train_seconds, ckpt_path = _float_model(args, device, x_train, y_train)
    fp32_model.eval()
    fp32_acc = evaluate(fp32_model, "eval fp32")
    timings["fp32"] = time.perf_counter() - t
    _log(f"FP32: {fp32_acc:.2f}%")

    # 2. PTQ, 8 bits: max, then one histogram pass for entropy / percentile / mse --------------------
    t = time.perf_counter()
    qmodel = quantize(fp32_model).to(device)
    ptq = {}
    snapshots = {}
    amax_by_method = {}
    for method in PTQ_METHODS:
        if method in ("max", "entropy"):  # one collection serves entropy, percentile and mse
            tq_calib.collect_stats(qmodel, calib_data(), num_batches=args.calib_batches, method=method,
                                   progress=show)
        tq_calib.compute_amax(qmodel, method=method)
        ptq[method] = evaluate(qmodel, f"eval PTQ {method}")
        snapshots[method] = copy.deepcopy(qmodel.state_dict())
        amax_by_method[method] = _input_amax(qmodel)
        _log(f"PTQ int8 {method}: {ptq[method]:.2f}%")
    best = max(PTQ_METHODS, key=lambda m: ptq[m])  # first of equals wins
    # auto: per quantizer, the method whose amax costs its layer's output least (its own collection).
    auto_report = tq_calib.calibrate_auto(qmodel, calib_data(), num_batches=args.calib_batches, progress=show)
    ptq_auto = evaluate(qmodel, "eval PTQ auto")
    amax_by_method["auto"] = _input_amax(qmodel)
    auto_choices = {c.quantizer: c.method for c in auto_report}
    _log(f"PTQ int8 auto: {ptq_auto:.2f}%")
    timings["ptq"] = time.perf_counter() - t

    # 3. QAT, 8 bits, from the best calibration ---------------------------------------------------------
    t = time.perf_counter()
    qmodel.load_state_dict(snapshots[best])
    if args.qat_epochs > 0:
        qat(qmodel, args.qat_epochs, 1e-3, "QAT int8", 10)
    qat_acc = evaluate(qmodel, "eval QAT int8")
    timings["qat"] = time.perf_counter() - t
    _log(f"QAT int8 ({args.qat_epochs} epoch(s) from {best}): {qat_acc:.2f}%")

    # 4. QDQ ONNX export and ONNX Runtime --------------------------------------------------------------
    t = time.perf_counter()
    onnx_path = os.path.join(args.out, "fashion_resnet_int8_qdq.onnx")
    ort_acc, onnx_bytes, lat_torch, lat_ort = _onnx_step(args, qmodel, fp32_model, onnx_path, x_test, y_test,
                                                        eval_bs, show)
    timings["onnx"] = time.perf_counter() - t
    _log(f"ONNX Runtime int8: {ort_acc:.2f}%")

    def ptq_qat_onnx(name, model, method, epochs, lr, seed_offset, opset):
        """Calibrate (method), evaluate, QAT for epochs, evaluate, export at opset and run in ONNX
        Runtime: (PTQ %, QAT %, ORT %, ONNX path)."""
        tq_calib.calibrate(model, calib_data(), method=method, num_batches=args.calib_batches, progress=show)
        ptq_acc = evaluate(model, f"eval PTQ {name}")
        if epochs > 0:
            qat(model, epochs, lr, f"QAT {name}", seed_offset)
        qat_acc_ = evaluate(model, f"eval QAT {name}")
        path = os.path.join(args.out, f"fashion_resnet_{name}_qdq.onnx")
        ort = _ort_accuracy(model, name, opset, path, x_test, y_test, eval_bs, show)
        _log(f"{name} PTQ {ptq_acc:.2f}%  QAT {qat_acc_:.2f}%  ONNX Runtime {ort:.2f}%")
        return ptq_acc, qat_acc_, ort, path

    # 5. FP8 E4M3 weights (per channel) and activations: max calibration, QAT, opset-19 ONNX ---------
    t = time.perf_counter()
    fp8 = quantize(fp32_model, weight_bits=E4M3, act_bits=E4M3).to(device)
    fp8_ptq, fp8_qat, fp8_ort, fp8_path = ptq_qat_onnx("fp8", fp8, "max", args.qat_epochs, 1e-3, 30, 19)
    timings["fp8"] = time.perf_counter() - t

    # 6. low bit: 4-bit per-channel weights, 8-bit activations; opset-21 ONNX (INT4 weights) ----------
    t = time.perf_counter()
    lowbit = quantize(fp32_model, weight_bits=4).to(device)
    act_method = best
    w4_ptq, w4_qat, w4_ort, w4_path = ptq_qat_onnx("w4a8", lowbit, act_method, args.lowbit_qat_epochs, 5e-3, 20, 21)
    timings["lowbit"] = time.perf_counter() - t

    # 7. one table, one figure --------------------------------------------------------------------------
    def d(acc):
        return f"{acc - fp32_acc:+.2f}"

    trained = f"trained {train_seconds:.0f} s" if train_seconds else "cached checkpoint"
    rows = [("FP32 (PyTorch)", f"{fp32_acc:.2f} %", "", f"{count_parameters(fp32_model) / 1e6:.2f}M params, "
             f"{args.epochs} epochs, {trained}"), None]
    for m in PTQ_METHODS:
        note = {"max": "max calibration", "entropy": "histogram, KL divergence", "percentile": "histogram, 99.99%",
                "mse": "histogram, min MSE"}[m] + (" (best)" if m == best else "")
        rows.append((f"PTQ int8 {m}", f"{ptq[m]:.2f} %", d(ptq[m]), note))
    kept = collections.Counter(auto_choices.values())
    rows.append(("PTQ int8 auto", f"{ptq_auto:.2f} %", d(ptq_auto),
                 "per quantizer: " + ", ".join(f"{n} {m}" for m, n in kept.most_common())))
    rows.append((f"QAT int8", f"{qat_acc:.2f} %", d(qat_acc), f"{args.qat_epochs} epoch(s) from {best}, SGD 1e-3 cosine"))
    rows.append(("ONNX Runtime int8", f"{ort_acc:.2f} %", d(ort_acc),
                 f"QDQ ONNX of the QAT model, {ort_acc - qat_acc:+.2f} vs PyTorch fake quant"))
    rows.append(None)
    rows.append(("PTQ fp8", f"{fp8_ptq:.2f} %", d(fp8_ptq), "E4M3 weights (per channel) and activations, max"))
    rows.append(("QAT fp8", f"{fp8_qat:.2f} %", d(fp8_qat), f"{args.qat_epochs} epoch(s), SGD 1e-3 cosine"))
    rows.append(("ONNX Runtime fp8", f"{fp8_ort:.2f} %", d(fp8_ort),
                 f"opset 19 FLOAT8E4M3FN QDQ of QAT fp8, {fp8_ort - fp8_qat:+.2f} vs fake quant"))
    rows.append(None)
    rows.append(("PTQ w4a8", f"{w4_ptq:.2f} %", d(w4_ptq), f"4-bit per-channel weights, 8-bit act ({act_method})"))
    rows.append(("QAT w4a8", f"{w4_qat:.2f} %", d(w4_qat), f"{args.lowbit_qat_epochs} epoch(s), PyTorch fake quant"))
    rows.append(("ONNX Runtime w4a8", f"{w4_ort:.2f} %", d(w4_ort),
                 f"opset 21 INT4-weight QDQ of QAT w4a8, {w4_ort - w4_qat:+.2f} vs fake quant"))
    rows.append(None)
    rows.append(("ONNX file size", f"{onnx_bytes / 1024:.0f} KiB", "", os.path.basename(onnx_path)))
    rows.append((f"latency, batch {eval_bs}", f"{lat_torch:.1f} ms", "", "PyTorch FP32, CPU"))
    rows.append((f"latency, batch {eval_bs}", f"{lat_ort:.1f} ms", "", "ONNX Runtime int8 QDQ, CPU"))
    total = time.perf_counter() - t_start
    table = report.format_table(rows, title=f"torchqat demo: Fashion-MNIST, {x_test.shape[0]} test images "
                                            f"(device {device}, wall time {total:.0f} s)")
    print()
    print(table, flush=True)

    plot_path = os.path.join(args.out, "torchqat_demo.png")
    accs = [("FP32", fp32_acc)] + [(f"PTQ int8 {m}", ptq[m]) for m in PTQ_METHODS] + [("PTQ int8 auto", ptq_auto)] + [
        ("QAT int8", qat_acc), ("ORT int8", ort_acc), ("PTQ fp8", fp8_ptq), ("QAT fp8", fp8_qat), ("ORT fp8", fp8_ort),
        ("PTQ w4a8", w4_ptq), ("QAT w4a8", w4_qat), ("ORT w4a8", w4_ort)]
    report.save_plot(plot_path, amax_by_method, accs, fp32_acc,
                     annotations={"auto": [auto_choices.get(n, "") for n, _ in amax_by_method["auto"]]})
    results = {"fp32": fp32_acc, "ptq": ptq, "best_ptq_method": best, "ptq_auto": ptq_auto,
               "auto_choices": auto_choices, "qat": qat_acc, "ort_int8": ort_acc,
               "fp8_ptq": fp8_ptq, "fp8_qat": fp8_qat, "ort_fp8": fp8_ort, "onnx_fp8": fp8_path,
               "w4a8_ptq": w4_ptq, "w4a8_qat": w4_qat, "ort_w4a8": w4_ort, "onnx_w4a8": w4_path,
               "onnx_bytes": onnx_bytes, "latency_ms_torch_fp32": lat_torch,
               "latency_ms_ort_int8": lat_ort, "latency_batch": eval_bs, "device": str(device),
               "checkpoint": ckpt_path, "onnx": onnx_path, "plot": plot_path, "seconds": total,
               "step_seconds": timings, "args": vars(args)}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {', '.join(os.path.basename(p) for p in (onnx_path, fp8_path, w4_path))}, "
          f"{os.path.basename(plot_path)} and results.json in {args.out}")
    return results


def _onnx_step(args, qmodel, fp32_model, onnx_path, x_test, y_test, eval_bs, show):
    """Exports the int8 QAT model as QDQ ONNX, checks it, and evaluates and times it in ONNX Runtime (CPU)."""
    onnx_bytes = onnx_run.export(qmodel, x_test[:1].clone(), onnx_path, opset_version=13)
    run = onnx_run.session(onnx_path, onnx_run.OPTIMIZATION["int8"])
    ort_acc = onnx_run.evaluate(run, x_test, y_test, eval_bs, "eval ONNX Runtime int8", show)
    xb = x_test[:eval_bs].contiguous()
    xb_np = xb.numpy()
    repeats = 3 if args.quick else 20
    lat_ort = train.time_per_batch(lambda: run(xb_np), repeats=repeats)
    fp32_cpu = copy.deepcopy(fp32_model).cpu().eval()
    with torch.no_grad():
        lat_torch = train.time_per_batch(lambda: fp32_cpu(xb), repeats=repeats)
    return ort_acc, onnx_bytes, lat_torch, lat_ort


def _ort_accuracy(model, fmt, opset_version, onnx_path, x_test, y_test, eval_bs, show):
    """ONNX Runtime accuracy of model exported as QDQ ONNX at opset_version (fmt: a key of onnx_run.OPTIMIZATION)."""
    onnx_run.export(model, x_test[:1].clone(), onnx_path, opset_version=opset_version)
    run = onnx_run.session(onnx_path, onnx_run.OPTIMIZATION[fmt])
    return onnx_run.evaluate(run, x_test, y_test, eval_bs, f"eval ONNX Runtime {fmt}", show)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
