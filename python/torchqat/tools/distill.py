"""Label-free feature distillation for QAT: per-layer MSE between the quantized model and a float copy.

This is the loss NVIDIA's YOLOv7 QAT recipe fine-tunes with (no labels, no detection loss):

    loss_fn = FeatureDistillationLoss(model, layers=["backbone.*", "sppcspc", "elan_*"])
    for images in loader:
        loss = loss_fn(images)          # runs the student, and the teacher under no_grad
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    loss_fn.remove()                    # hooks off before torch.save / ONNX export

or, running the models yourself: `student(x); teacher(x); loss = loss_fn.compute()`.

Features are caught with forward hooks on the named layers of both models. A layer whose output
is a tuple/list contributes the MSE of each tensor in it. Per-layer MSE (mean over elements) is
summed over layers (reduction="sum", as NVIDIA does) or averaged ("mean").
"""
import copy
import fnmatch
import warnings

import torch
from torch import nn
from torch.utils import _pytree

from .. import _C
from ..nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["FeatureDistillationLoss"]


def _float_copy(model):
    teacher = copy.deepcopy(model)
    for m in teacher.modules():
        if isinstance(m, TensorQuantizer):
            m.disable()
    teacher.requires_grad_(False)
    return teacher.eval()


class FeatureDistillationLoss:
    """Σ_layers MSE(student layer output, teacher layer output).

    student: the model being fine-tuned (quantized).
    teacher: the float reference; None makes one: a deep copy of the student with every
      quantizer disabled, eval mode, no gradients (make the loss before QAT starts).
    layers: module names or fnmatch patterns (a string or a list), matched against the
      student's module names; each must also exist in the teacher.
    """

    def __init__(self, student, teacher=None, layers=None, reduction="sum"):
        if not isinstance(student, nn.Module):
            raise TypeError(f"FeatureDistillationLoss: student must be an nn.Module, got {type(student).__name__}")
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise TypeError(f"FeatureDistillationLoss: teacher must be an nn.Module, got {type(teacher).__name__}")
        if teacher is student:
            raise ValueError("FeatureDistillationLoss: teacher must be a different module object from student "
                             "(pass teacher=None for a float copy)")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"FeatureDistillationLoss: reduction must be 'sum' or 'mean', got {reduction!r}")
        if layers is None:
            raise ValueError("FeatureDistillationLoss: give the layers to supervise (names or patterns)")
        patterns = [layers] if isinstance(layers, str) else list(layers)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise TypeError(f"FeatureDistillationLoss: layers must be a string or a list of strings, got {layers!r}")
        self.student = student
        self.teacher = _float_copy(student) if teacher is None else teacher
        self.reduction = reduction
        names = [n for n, _ in student.named_modules() if n]
        chosen = []
        for p in patterns:
            hits = [n for n in names if fnmatch.fnmatchcase(n, p)]
            if not hits:
                warnings.warn(f"FeatureDistillationLoss: layer pattern {p!r} matched no module", stacklevel=2)
            chosen.extend(h for h in hits if h not in chosen)
        if not chosen:
            raise ValueError(f"FeatureDistillationLoss: layers={patterns!r} matched no module of the student")
        teacher_modules = dict(self.teacher.named_modules())
        missing = [n for n in chosen if n not in teacher_modules]
        if missing:
            raise ValueError(f"FeatureDistillationLoss: the teacher has no module named {missing[0]!r}")
        self.layers = [n for n in names if n in chosen]  # model order
        self._student_feats, self._teacher_feats = {}, {}
        self._handles = []
        self.student_output = None
        student_modules = dict(student.named_modules())
        for n in self.layers:
            self._handles.append(student_modules[n].register_forward_hook(self._hook(self._student_feats, n, False)))
            self._handles.append(teacher_modules[n].register_forward_hook(self._hook(self._teacher_feats, n, True)))

    @staticmethod
    def _hook(store, name, detach):
        def hook(_module, _inputs, output):
            leaves = [t for t in _pytree.tree_leaves(output) if torch.is_tensor(t)]
            store[name] = [t.detach() for t in leaves] if detach else leaves
        return hook

    def __call__(self, *inputs, **kwargs):
        """With inputs: runs the student and (no_grad) the teacher on them, then compute(). Without: compute()."""
        if inputs or kwargs:
            self.clear()
            self.student_output = self.student(*inputs, **kwargs)
            with torch.no_grad():
                self.teacher(*inputs, **kwargs)
        return self.compute()

    def compute(self):
        """The loss from the features the last student and teacher forwards left; clears them."""
        if not self._handles:
            raise RuntimeError("FeatureDistillationLoss: the hooks were removed; make a new loss")
        for n in self.layers:
            if n not in self._student_feats or n not in self._teacher_feats:
                who = "student" if n not in self._student_feats else "teacher"
                raise RuntimeError(f"FeatureDistillationLoss: no {who} output for layer {n!r}: run both models "
                                   "on the same inputs first (or call the loss with the inputs)")
        student = [self._student_feats[n] for n in self.layers]
        teacher = [self._teacher_feats[n] for n in self.layers]
        self.clear()
        # The loss (per-layer MSE, summed or averaged; shape checks) is the C++ core's
        # torchqat::tools::feature_distillation_loss, shared with the C++ FeatureDistillationLoss.
        return _C.feature_distillation_loss(self.layers, student, teacher, self.reduction)

    def clear(self):
        """Drops the recorded layer outputs (call after each backward)."""
        self._student_feats.clear()
        self._teacher_feats.clear()

    def remove(self):
        """Removes every hook (needed before torch.save of the model or ONNX export)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def __repr__(self):
        state = "active" if self._handles else "removed"
        return f"FeatureDistillationLoss({len(self.layers)} layers, reduction={self.reduction!r}, hooks {state})"
