"""Every public module, class, function, method and property of the package has a docstring."""
import importlib
import inspect
import pkgutil

import torchqat

# Private modules (a leading underscore) are skipped, but for pytorch-quantization's public `_utils`.
PUBLIC_PRIVATE_NAMES = ("_utils",)


def _modules():
    for info in pkgutil.walk_packages(torchqat.__path__, "torchqat."):
        last = info.name.rsplit(".", 1)[-1]
        if ".demo" in info.name or (last.startswith("_") and last not in PUBLIC_PRIVATE_NAMES):
            continue
        yield importlib.import_module(info.name)


def _public(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    for n in names:
        obj = getattr(module, n, None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "").startswith("torchqat"):
            yield f"{obj.__module__}.{obj.__qualname__}", obj


def test_every_public_name_has_a_docstring():
    missing = set()
    for module in _modules():
        if not (module.__doc__ or "").strip():
            missing.add(module.__name__)
        for qualname, obj in _public(module):
            if not (obj.__doc__ or "").strip():
                missing.add(qualname)
            if inspect.isclass(obj):
                for name, member in vars(obj).items():
                    if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                        continue
                    if not (inspect.getdoc(member) or "").strip():
                        missing.add(f"{qualname}.{name}")
    assert sorted(missing) == []
