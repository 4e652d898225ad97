"""YOLOv7 PTQ / QAT with torchqat: the recipe's steps as functions, usable on any YOLOv7-style model.

The steps follow NVIDIA's published YOLOv7 QAT recipe: fold BN, quantize every conv except the
detect head, give TensorRT the shared scales it needs (concat inputs, MaxPool branches), calibrate
activations with a histogram (mse), fine-tune with layer-wise feature distillation against the
float model (no labels), export QDQ ONNX at opset 13. `yolov7_main.py` wires them to a
WongKinYiu/yolov7 checkout; the tests run every function here on a YOLO-like network.
"""
import copy

import torch

import torchqat
from torchqat import tools
from torchqat.tensor_quant import QuantDescriptor

__all__ = ["prepare", "calibrate", "sensitivity", "finetune", "export", "trtexec_command", "DEFAULT_LR_SCHEDULE"]

# Adam learning rate by epoch (NVIDIA's recipe: 10 epochs of 200 batches).
DEFAULT_LR_SCHEDULE = {0: 1e-6, 3: 1e-5, 8: 1e-6}


def prepare(model, example_inputs, exclude=("model.105.m.*",), fold_bn=True):
    """Float model -> quantized model with TensorRT's shared scales, in place; returns the SharingReport.

    exclude: module-name patterns kept float (YOLOv7's IDetect output convs by default;
      yolov7-tiny uses ("model.77.m.*", "model.0.*")).
    fold_bn: fold Conv+BN first, as the deploy graph TensorRT builds has no BN.
    """
    model.eval()
    if fold_bn:
        torchqat.fold_bn(model, example_inputs=example_inputs)
    # Activations: histogram statistics (the search runs at calibration); weights: per-channel max.
    torchqat.quantize_model(model, exclude=list(exclude),
                            quant_desc_input=QuantDescriptor(num_bits=8, calib_method="histogram"))
    return torchqat.share_scales(model, example_inputs)


def calibrate(model, batches, num_batches=25, method="mse", preprocess=None, progress=True):
    """PTQ: activations by the histogram search `method` ('mse' is the recipe's best), weights by max."""
    forward_fn = None
    if preprocess is not None:
        def forward_fn(m, batch):
            return m(preprocess(batch))
    return torchqat.calibrate(model, batches, method=method, num_batches=num_batches, progress=progress,
                              forward_fn=forward_fn)


def sensitivity(model, eval_fn, top=10, plot=None):
    """Ranks layers by the score gained when that one layer runs float; returns the top `top` rows."""
    table = tools.sensitivity(model, eval_fn, mode="all_but_one", plot=plot)
    return table, [row.layer for row in table.rows[:top]]


def finetune(model, batches, epochs=10, iters_per_epoch=200, lr_schedule=None, layers=("model.*",),
             preprocess=None, device=None, on_epoch_end=None, amp=None):
    """QAT with the label-free feature-distillation loss; returns the per-epoch mean losses.

    layers: fnmatch patterns of the supervised modules (their outputs are matched to the float
      model's); YOLOv7's top-level blocks are "model.<i>", so "model.[0-9]*" style patterns work.
    batches: a re-iterable of inputs (a DataLoader); preprocess(batch) -> model input.
    on_epoch_end(epoch, model): e.g. evaluate mAP and keep the best checkpoint.
    amp: run in fp16 autocast with a GradScaler (default: on CUDA).
    """
    schedule = DEFAULT_LR_SCHEDULE if lr_schedule is None else lr_schedule
    device = device or next(model.parameters()).device
    amp = (device.type == "cuda") if amp is None else amp
    layers = list(layers)
    loss_fn = tools.FeatureDistillationLoss(model, layers=layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule[min(schedule)])
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    history = []
    try:
        for epoch in range(epochs):
            lr = schedule[max((e for e in schedule if e <= epoch), default=min(schedule))]
            for g in optimizer.param_groups:
                g["lr"] = lr
            model.train()
            total, seen = 0.0, 0
            for i, batch in enumerate(batches):
                if i >= iters_per_epoch:
                    break
                x = preprocess(batch) if preprocess is not None else batch
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    loss = loss_fn(x)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += float(loss.detach())
                seen += 1
            history.append(total / max(seen, 1))
            if on_epoch_end is not None:
                loss_fn.remove()  # hooks off while the callback saves or evaluates
                on_epoch_end(epoch, model)
                loss_fn = tools.FeatureDistillationLoss(model, teacher=loss_fn.teacher, layers=layers)
    finally:
        loss_fn.remove()
    model.eval()
    return history


def export(model, path, example_inputs, dynamic_batch=True):
    """QDQ ONNX (opset 13) of a float copy of the model, inputs "images", outputs "output*"."""
    model = copy.deepcopy(model).float().eval()
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    with torch.no_grad():
        out = model(*args)
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    outputs = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in ["images"] + outputs} if dynamic_batch else None
    torchqat.onnx.export(model, args, path, opset_version=13, input_names=["images"], output_names=outputs,
                         dynamic_axes=axes)
    return path


def trtexec_command(onnx_path, engine_path=None, batch=1, imgsz=640, fp16_fallback=True):
    """The trtexec line that builds the INT8 engine from the QDQ model (explicit quantization)."""
    engine_path = engine_path or onnx_path.rsplit(".", 1)[0] + ".engine"
    shape = f"images:{batch}x3x{imgsz}x{imgsz}"
    flags = ["--int8"] + (["--fp16"] if fp16_fallback else [])
    return " ".join(["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", *flags,
                     f"--minShapes={shape}", f"--optShapes={shape}", f"--maxShapes={shape}"])
