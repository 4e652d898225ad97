"""quantize_model: replace a model's float layers by quantized ones, in place, without a global patch.

    torchqat.quantize_model(model, {
        "quant_cfg": {
            "*weight_quantizer": {"num_bits": 8, "axis": 0},
            "*input_quantizer": QuantDescriptor(calib_method="histogram"),
            "backbone.0.*": {"enable": False},          # first conv: replaced, quantizers off
        },
        "exclude": ["head.m.*"],                        # detect convs stay float
    })

Patterns are fnmatch patterns (`*` also matches dots).
- include / exclude match module names. A module is excluded when its name or the name of one
  of its parents matches (so "head" keeps the whole head float). With include, only modules
  whose name (or a parent's) matches are replaced.
- quant_cfg keys match quantizer names, `<module>._input_quantizer` / `<module>._weight_quantizer`
  (ModelOpt's `<module>.input_quantizer` spelling also matches), or a module name, which then
  applies to every quantizer of that module. Values are a QuantDescriptor (replaces the
  descriptor) or a dict of descriptor fields to change plus "enable" (False disables the
  quantizer). Patterns apply in order; later ones win. Descriptor fields apply when the module
  is built, so they reach the kinds "input" and "weight" (a QuantAdd's two input quantizers
  take the same descriptor); "enable" applies to the real quantizer names, e.g. `*_input1_quantizer`.
- A pattern that matches nothing is reported with warnings.warn, naming it.

Which layers: pytorch-quantization's default map (Conv, ConvTranspose, Linear, LSTM, LSTMCell,
AvgPool, AdaptiveAvgPool; exact types, subclasses are left alone) plus `custom_quant_modules`
({float class or torch.nn class name: quant class}). Modules already quantized are left as they
are. The replacement shares the float layer's Parameter objects, so an optimizer made before
keeps training the same tensors, and keeps its hooks. As in quant_modules, MaxPool and
InstanceNorm stay float unless named in custom_quant_modules
(e.g. {"InstanceNorm2d": quant_nn.QuantInstanceNorm2d}): TensorRT runs InstanceNorm in float, so
a Q/DQ pair in front of it only adds error. A QuantLSTM's descriptors come from the patterns
for `<lstm>._input_quantizer` / `<lstm>._weight_quantizer` (every layer x direction alike);
"enable" also matches the real names, `<lstm>._input_quantizers.<i>`.

Calibration is separate (torchqat.calibrate); a ModelOpt-style "algorithm" key is accepted and
ignored.
"""
import fnmatch
import inspect
import warnings

import torch
from torch import nn

from .nn.modules.tensor_quantizer import TensorQuantizer
from .tensor_quant import QuantDescriptor

__all__ = ["quantize_model", "default_quant_map"]

_CONFIG_KEYS = ("quant_cfg", "include", "exclude", "custom_quant_modules", "algorithm")
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
               "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")


def default_quant_map():
    """{float class: quant class} of pytorch-quantization's default map (robust to quant_modules.initialize())."""
    from .quant_modules import _DEFAULT_QUANT_MAP
    return {e.replace_mod._float_module: e.replace_mod for e in _DEFAULT_QUANT_MAP}


def _patterns(value, what):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise TypeError(f"quantize_model: {what} must be a pattern string or a list of them, got {value!r}")
    return list(value)


def _resolve_float_class(key):
    if isinstance(key, str):
        if not hasattr(torch.nn, key):
            raise ValueError(f"quantize_model: unknown module type {key!r} in custom_quant_modules "
                             "(torch.nn has no such class)")
        key = getattr(torch.nn, key)
        key = getattr(key, "_float_module", key)  # torch.nn may be patched by quant_modules.initialize()
    if not (inspect.isclass(key) and issubclass(key, nn.Module)):
        raise ValueError(f"quantize_model: unknown module type {key!r} in custom_quant_modules "
                         "(keys must be nn.Module classes or torch.nn class names)")
    return key


def _custom_map(custom):
    """{float class: quant class} from a dict, a list of pairs or pytorch-quantization triples."""
    if custom is None:
        return {}
    if isinstance(custom, dict):
        items = list(custom.items())
    elif isinstance(custom, (list, tuple)):
        items = []
        for entry in custom:
            if isinstance(entry, (list, tuple)) and len(entry) == 3:  # (namespace, "Name", QuantCls)
                ns, name, qcls = entry
                if not isinstance(name, str) or not hasattr(ns, name):
                    raise ValueError(f"quantize_model: unknown module type {name!r} in custom_quant_modules entry "
                                     f"{entry!r}")
                items.append((getattr(ns, name), qcls))
            elif isinstance(entry, (list, tuple)) and len(entry) == 2:
                items.append(tuple(entry))
            else:
                raise ValueError(f"quantize_model: custom_quant_modules entry {entry!r} must be "
                                 "(FloatClass, QuantClass) or (namespace, 'Name', QuantClass)")
    else:
        raise TypeError(f"quantize_model: custom_quant_modules must be a dict or list, got {type(custom).__name__}")
    out = {}
    for key, qcls in items:
        fcls = _resolve_float_class(key)
        if not (inspect.isclass(qcls) and issubclass(qcls, nn.Module) and hasattr(qcls, "from_float")):
            raise ValueError(f"quantize_model: the replacement for {fcls.__name__} must be a quantized module class "
                             f"with a from_float classmethod, got {qcls!r}")
        out[fcls] = qcls
    return out


def _check_quant_cfg(quant_cfg):
    if quant_cfg is None:
        return []
    if not isinstance(quant_cfg, dict):
        raise TypeError(f"quantize_model: quant_cfg must be a dict {{pattern: descriptor or dict}}, "
                        f"got {type(quant_cfg).__name__}")
    out = []
    for pattern, spec in quant_cfg.items():
        if not isinstance(pattern, str):
            raise TypeError(f"quantize_model: quant_cfg keys must be pattern strings, got {pattern!r}")
        if isinstance(spec, QuantDescriptor):
            out.append((pattern, spec, None))
        elif isinstance(spec, dict):
            spec = dict(spec)
            enable = spec.pop("enable", None)
            if enable is not None and not isinstance(enable, bool):
                raise TypeError(f"quantize_model: quant_cfg[{pattern!r}]['enable'] must be a bool, got {enable!r}")
            try:
                QuantDescriptor().replace(**spec)  # validates the field names and values now
            except (TypeError, ValueError) as e:
                raise ValueError(f"quantize_model: quant_cfg[{pattern!r}] is not a valid descriptor: {e}") from e
            out.append((pattern, spec, enable))
        else:
            raise TypeError(f"quantize_model: quant_cfg[{pattern!r}] must be a QuantDescriptor or a dict, "
                            f"got {type(spec).__name__}")
    return out


def _names_for(module_name, attr):
    names = [module_name, f"{module_name}.{attr}" if module_name else attr]
    if attr.startswith("_"):
        names.append(f"{module_name}.{attr[1:]}" if module_name else attr[1:])
    return names


def _matches(pattern, names):
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def _scoped(name):
    """name and the names of its parents: 'a.b.c' -> ['a.b.c', 'a.b', 'a']."""
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _is_quantized(module):
    """A module holding quantizers directly or, like QuantLSTM, in ModuleLists."""
    return any(isinstance(c, TensorQuantizer) or
               (isinstance(c, nn.ModuleList) and any(isinstance(g, TensorQuantizer) for g in c))
               for c in module.children())


def _build_desc(base, rules, module_name, attr, used):
    desc = base
    for i, (pattern, spec, _enable) in enumerate(rules):
        if not _matches(pattern, _names_for(module_name, attr)):
            continue
        used.add(i)
        if isinstance(spec, QuantDescriptor):
            desc = spec
        elif spec:
            desc = desc.replace(**spec)
    return desc


def quantize_model(model, config=None, *, include=None, exclude=None, quant_desc_input=None, quant_desc_weight=None,
                   custom_quant_modules=None):
    """Replaces the float layers of `model` by quantized ones, in place; returns the model.

    config: {"quant_cfg": {...}, "include": [...], "exclude": [...], "custom_quant_modules": {...}}
    (see the module docstring). The keyword arguments add to the config's lists;
    quant_desc_input / quant_desc_weight replace the classes' default descriptors for this call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_model: model must be an nn.Module, got {type(model).__name__}")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise TypeError(f"quantize_model: config must be a dict, got {type(config).__name__}")
    unknown = set(config) - set(_CONFIG_KEYS)
    if unknown:
        raise ValueError(f"quantize_model: unknown config keys {sorted(unknown)}; allowed: {list(_CONFIG_KEYS)}")
    for what, desc in (("quant_desc_input", quant_desc_input), ("quant_desc_weight", quant_desc_weight)):
        if desc is not None and not isinstance(desc, QuantDescriptor):
            raise TypeError(f"quantize_model: {what} must be a QuantDescriptor, got {type(desc).__name__}")

    includes = _patterns(config.get("include"), "include") + _patterns(include, "include")
    excludes = _patterns(config.get("exclude"), "exclude") + _patterns(exclude, "exclude")
    rules = _check_quant_cfg(config.get("quant_cfg"))
    qmap = default_quant_map()
    qmap.update(_custom_map(config.get("custom_quant_modules")))
    qmap.update(_custom_map(custom_quant_modules))

    used_include, used_exclude, used_rules = set(), set(), set()
    all_names = [n for n, _ in model.named_modules(remove_duplicate=False)]
    for i, p in enumerate(includes):
        if any(fnmatch.fnmatchcase(n, p) for n in all_names):
            used_include.add(i)
    for i, p in enumerate(excludes):
        if any(fnmatch.fnmatchcase(n, p) for n in all_names):
            used_exclude.add(i)

    replaced = {}  # id(float module) -> quant module (a module used twice stays shared)

    def wanted(name):
        scopes = _scoped(name)
        if any(_matches(p, scopes) for p in excludes):
            return False
        return not includes or any(_matches(p, scopes) for p in includes)

    def visit(parent, prefix):
        for attr, child in list(parent._modules.items()):
            if child is None:
                continue
            name = f"{prefix}.{attr}" if prefix else attr
            if id(child) in replaced:
                parent._modules[attr] = replaced[id(child)]
                continue
            qcls = qmap.get(type(child))
            if qcls is not None and not _is_quantized(child) and wanted(name):
                parent._modules[attr] = replaced[id(child)] = _replace(child, qcls, name)
                continue
            if _is_quantized(child):
                continue
            visit(child, name)

    def _replace(child, qcls, name):
        desc_in = _build_desc(quant_desc_input or qcls.default_quant_desc_input, rules, name, "_input_quantizer",
                              used_rules)
        has_weight = hasattr(qcls, "default_quant_desc_weight")
        kwargs = {"quant_desc_input": desc_in}
        if has_weight:
            kwargs["quant_desc_weight"] = _build_desc(quant_desc_weight or qcls.default_quant_desc_weight, rules,
                                                      name, "_weight_quantizer", used_rules)
        try:
            q = qcls.from_float(child, **kwargs)
        except (TypeError, ValueError) as e:
            raise type(e)(f"quantize_model: cannot quantize {name!r} ({type(child).__name__}): {e}") from e
        # Share the parameters (optimizers made before keep working) and keep the hooks.
        for pname, p in child._parameters.items():
            if pname in q._parameters and p is not None:
                q._parameters[pname] = p
        for hooks in _HOOK_DICTS:
            if hasattr(child, hooks) and hasattr(q, hooks):
                setattr(q, hooks, getattr(child, hooks))
        for attr, sub in q.named_modules():  # QuantLSTM's are "_input_quantizers.0", ...
            if not isinstance(sub, TensorQuantizer):
                continue
            for i, (pattern, _spec, enable) in enumerate(rules):
                if _matches(pattern, _names_for(name, attr)):
                    used_rules.add(i)
                    if enable is False:
                        sub.disable()
                    elif enable is True:
                        sub.enable()
        return q

    if type(model) in qmap and not _is_quantized(model):
        raise ValueError("quantize_model: the model itself is a single float layer; quantize it with "
                         f"{qmap[type(model)].__name__}.from_float(model), which returns a new module")
    visit(model, "")

    for i, p in enumerate(includes):
        if i not in used_include:
            warnings.warn(f"quantize_model: include pattern {p!r} matched no module", stacklevel=2)
    for i, p in enumerate(excludes):
        if i not in used_exclude:
            warnings.warn(f"quantize_model: exclude pattern {p!r} matched no module", stacklevel=2)
    for i, (p, _s, _e) in enumerate(rules):
        if i not in used_rules:
            warnings.warn(f"quantize_model: quant_cfg pattern {p!r} matched no quantizer of a replaced module",
                          stacklevel=2)
    return model
