"""The demo's QDQ ONNX step: export a quantized model, check the file, and evaluate it in ONNX Runtime (CPU)."""
import copy
import os

import torch

from . import train

__all__ = ["export", "session", "evaluate"]

# ONNX Runtime graph optimization level per exported format. int8 and INT4 weights (w4a8) run with
# every optimization (the deployment setting). FP8 runs with the basic ones only: from the extended
# level on, ONNX Runtime's (1.32, CPU) graph transformations of the FLOAT8E4M3FN Q/DQ graph change
# its outputs. Measured on this demo's quick models, 512 test images, against the
# same file with optimizations off (which tests/python match to torchqat's fake quant): FP8 logits
# (|logit| <= 0.49) off by up to 1.17 at extended and all, 252 of 512 predictions changed; exact at
# basic. int8 and w4a8: exact at every level.
OPTIMIZATION = {"int8": "all", "fp8": "basic", "w4a8": "all"}


def export(model, example, path, opset_version):
    """Exports model (a CPU copy, eval mode) as QDQ ONNX at opset_version with a dynamic batch and
    runs onnx's full checker on the file; returns its size in bytes."""
    import onnx

    from .. import onnx as tq_onnx

    cpu_model = copy.deepcopy(model).cpu().eval()
    tq_onnx.export(cpu_model, (example,), path, opset_version=opset_version, input_names=["image"],
                   output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    onnx.checker.check_model(onnx.load(path), full_check=True)
    return os.path.getsize(path)


def session(path, optimization="all"):
    """An ONNX Runtime CPU session of path; optimization: 'all', 'extended', 'basic' or 'disable'."""
    import onnxruntime as ort

    level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
             "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
             "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
             "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.graph_optimization_level = level
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    return lambda xb: sess.run(None, {in_name: xb})[0]


def evaluate(run, x, y, batch_size, desc, show_progress):
    """Top-1 accuracy in percent of run (numpy batch -> logits) on (x, y)."""
    return train.predict_batches(run, x, y, batch_size=batch_size, desc=desc, show_progress=show_progress)
