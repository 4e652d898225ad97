"""Loads the compiled core: libtorchqat (which registers torch.ops.torchqat.*) and torchqat._C.

TORCHQAT_LIB_DIR points at a build directory holding both, for working on the C++ side
without reinstalling the package.
"""
import importlib.machinery
import importlib.util
import os
import sys

import torch  # noqa: F401  (loads LibTorch, which libtorchqat links against)


def _load_from(lib_dir):
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(lib_dir, "_C" + suffix)
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("torchqat._C", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            sys.modules["torchqat._C"] = mod
            return mod
    raise ImportError(f"TORCHQAT_LIB_DIR={lib_dir} holds no torchqat _C extension")


def load():
    lib_dir = os.environ.get("TORCHQAT_LIB_DIR")
    if lib_dir:
        return _load_from(lib_dir)
    try:
        from . import _C
    except ImportError as e:
        raise ImportError(
            "torchqat's compiled core is missing or does not match this torch "
            f"(torch {torch.__version__}): rebuild with `pip install --no-build-isolation .` ({e})") from e
    return _C
