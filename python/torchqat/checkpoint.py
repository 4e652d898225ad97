"""Transactional checkpoint loading: validate a whole state dict against the model, then load it.

`model.load_state_dict` copies tensor by tensor and only reports errors at the end, so a bad
checkpoint leaves a half-loaded model. `torchqat.load_state_dict` checks everything first (amax
values, shapes, per-channel sizes, keys) and raises before touching the model. Keys are
pytorch-quantization's, so its checkpoints load as they are.
"""
import os
from collections import OrderedDict
from collections.abc import Mapping

import torch

from .nn.modules.quant_weights import quant_weights
from .nn.modules.tensor_quantizer import TensorQuantizer

__all__ = ["load_state_dict"]


def load_state_dict(model, state_dict, strict=True):
    """Loads state_dict (a mapping, or a path to a torch.save file) into model, all or nothing.

    A path is read with torch.load(map_location='cpu', weights_only=True), so CUDA-saved
    checkpoints load on CPU-only machines. Checked before anything changes: every `*._amax` is a
    non-empty float tensor, finite and >= 0; every tensor has the shape of the model's
    parameter or buffer; an amax for a quantizer that has none yet has 1 value or, for a
    per-channel weight quantizer, one per channel of the weight along its axis; and with strict,
    no missing or unexpected keys. Any problem: RuntimeError listing all of them, model
    unchanged. Returns what model.load_state_dict returns.
    """
    source = "state dict"
    if isinstance(state_dict, (str, bytes, os.PathLike)):
        source = f"checkpoint '{os.fsdecode(state_dict)}'"
        state_dict = _read(os.fsdecode(state_dict))
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"torchqat.load_state_dict: {source} must be a mapping of names to tensors, "
                        f"got {type(state_dict).__name__}")
    state_dict, errors = _validate(model, state_dict, strict)
    if errors:
        raise RuntimeError(f"torchqat.load_state_dict: {source} was not loaded; the model is unchanged:\n  " +
                           "\n  ".join(errors))
    return model.load_state_dict(state_dict, strict=strict)


def _read(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # zip / unpickling errors: their messages do not name the file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise RuntimeError(f"torchqat.load_state_dict: cannot read checkpoint '{path}': the file is truncated or "
                           f"corrupted, or is not a weights-only state dict ({type(e).__name__}: {first})") from e


def _new_amax_slots(model):
    """{key: (quantizer, parent module, weight it quantizes or None)} for quantizers without `_amax`:
    their amax key is not in model.state_dict() yet, but loading registers it."""
    slots, parents, weights = {}, {}, {}
    for name, mod in model.named_modules(remove_duplicate=False):
        for child_name, child in mod.named_children():
            parents.setdefault(id(child), mod)
        for qpath, w, q, _axis in quant_weights(mod):
            weights.setdefault(id(q), w)
    for name, mod in model.named_modules(remove_duplicate=False):
        if isinstance(mod, TensorQuantizer) and not hasattr(mod, "_amax"):
            parent = parents.get(id(mod))
            if isinstance(parent, torch.nn.ModuleList):  # an RNN's per-layer lists: the layer owns the weights
                parent = parents.get(id(parent), parent)
            slots[f"{name}._amax" if name else "_amax"] = (mod, parent, weights.get(id(mod)))
    return slots


def _check_new_amax(key, value, quantizer, weight):
    """Shape rule for an amax the quantizer does not have yet; an error string or None."""
    n = value.numel()
    axis = quantizer.axis
    if axis is None:
        return None if n == 1 else f"{key}: a per-tensor quantizer takes 1 amax value, got shape {tuple(value.shape)}"
    if not torch.is_tensor(weight):
        return None  # an input quantizer: the input's shape is not known here
    block = quantizer.block_size
    if block is not None:  # one amax per block of `block` inputs of each output row
        want = (weight.shape[0], weight.shape[1] // block) if weight.dim() == 2 and weight.shape[1] % block == 0 else None
        if want is not None and tuple(value.shape) == want:
            return None
        return (f"{key}: amax of shape {tuple(value.shape)} does not fit the weight of shape {tuple(weight.shape)} "
                f"with block_size {block} (expected shape {want})")
    dims = [a % weight.dim() for a in axis]
    k = 1
    for a in dims:
        k *= weight.shape[a]
    if n == 1:
        return None
    # [K] for one axis, or keepdim-shaped to broadcast against the weight ([K,1,1,1]).
    keepdim = [weight.shape[d] if d in dims else 1 for d in range(weight.dim())]
    if n == k and ((len(dims) == 1 and value.dim() == 1) or list(value.shape) == keepdim):
        return None
    return (f"{key}: amax of shape {tuple(value.shape)} does not fit the weight of shape {tuple(weight.shape)} "
            f"along axis {axis} (expected 1 value or {k}, shaped {tuple(keepdim)})")


def _validate(model, state_dict, strict):
    """(the state dict to load, [error strings])."""
    expected = model.state_dict(keep_vars=True)
    slots = _new_amax_slots(model)
    errors, unexpected, out = [], [], OrderedDict(state_dict)
    if hasattr(state_dict, "_metadata"):
        out._metadata = state_dict._metadata  # per-module versions, which _load_from_state_dict reads
    for key, value in state_dict.items():
        if key.endswith("_extra_state"):
            continue
        if not torch.is_tensor(value):
            errors.append(f"{key}: expected a tensor, got {type(value).__name__}")
            continue
        if key == "_amax" or key.endswith("._amax"):
            if not value.is_floating_point() or value.numel() == 0:
                errors.append(f"{key}: amax must be a non-empty float tensor, got {value.dtype} of shape "
                              f"{tuple(value.shape)}")
                continue
            v = value.detach().float()
            if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
                errors.append(f"{key}: amax must be finite and >= 0, got {v.flatten()[:8].tolist()}")
                continue
        if key in expected:
            if value.shape != expected[key].shape:
                errors.append(f"{key}: shape {tuple(value.shape)} does not match the model's "
                              f"{tuple(expected[key].shape)}")
        elif key in slots:
            quantizer, parent, weight = slots[key]
            err = _check_new_amax(key, value, quantizer, weight)
            if err:
                errors.append(err)
            else:
                # Registered as given; put it with the layer (a CPU-mapped checkpoint into a CUDA model).
                dev = next((t.device for t in parent.parameters()), None) if parent is not None else None
                if dev is not None:
                    out[key] = value.to(dev)
        else:
            unexpected.append(key)
    if strict:
        missing = [k for k in expected if k not in state_dict]
        if missing:
            errors.append(f"missing keys: {missing}")
        if unexpected:
            errors.append(f"unexpected keys: {unexpected}")
    return out, errors
