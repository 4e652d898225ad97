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


def torch_series(version):
    """'2.11' of '2.11.0+cu130': the part of torch's version that fixes its C++ ABI."""
    return ".".join(version.split("+")[0].split(".")[:2])


def check_torch(built_for, running):
    """Raises ImportError naming both versions when the running torch is not the series built for."""
    if torch_series(running) != built_for:
        raise ImportError(
            f"torchqat was built against torch {built_for}.x but torch {running} is installed; its C++ "
            f"core needs the same series. Install torch {built_for} (`pip install 'torch=={built_for}.*'`) "
            f"or rebuild torchqat against this torch (`pip install --no-build-isolation --force-reinstall .`).")


def load():
    lib_dir = os.environ.get("TORCHQAT_LIB_DIR")
    if lib_dir:
        return _load_from(lib_dir)
    try:
        from ._build_info import TORCH_VERSION as built_for
    except ImportError:
        built_for = None  # an in-tree import without a build: the import of _C below says what to do
    if built_for is not None:
        check_torch(built_for, torch.__version__)
    try:
        from . import _C
    except ImportError as e:
        raise ImportError(
            "torchqat's compiled core is missing or does not match this torch "
            f"(torch {torch.__version__}): rebuild with `pip install --no-build-isolation .` ({e})") from e
    return _C
