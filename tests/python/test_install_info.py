"""What `python -m torchqat` reports and the torch-version check at import."""
import os
import subprocess
import sys

import pytest
import torch

import torchqat
from torchqat import _C, _loader
from torchqat import __main__ as cli


def test_series_of_a_version():
    assert _loader.torch_series("2.11.0+cu130") == "2.11"
    assert _loader.torch_series("2.11.1") == "2.11"
    assert _loader.torch_series("2.12.0.dev20260101") == "2.12"


def test_same_series_passes_and_another_is_refused_by_name():
    _loader.check_torch("2.11", "2.11.0+cu130")
    with pytest.raises(ImportError) as e:
        _loader.check_torch("2.11", "2.12.0")
    msg = str(e.value)
    assert "built against torch 2.11.x" in msg and "torch 2.12.0 is installed" in msg and "pip install" in msg


def test_compiled_against_the_running_torch():
    assert _C.torch_version() == torch.__version__.split("+")[0]


def test_report_names_versions_cuda_and_library():
    lines = "\n".join(cli.report())
    assert f"torchqat {torchqat.__version__}" in lines
    assert f"torch {torch.__version__}" in lines
    if torchqat.cuda_compiled():
        archs = _C.cuda_archs().split()
        assert archs and all(a in lines for a in archs)
    else:
        assert "not compiled" in lines
    lib = cli.loaded_library()
    assert lib is not None and os.path.exists(lib) and f"libtorchqat: {lib}" in lines


def test_installed_package_is_a_cmake_prefix():
    prefix = cli.cmake_prefix_path()
    assert prefix == os.path.dirname(os.path.abspath(torchqat.__file__))
    assert os.path.exists(os.path.join(prefix, "include", "torchqat", "torchqat.h"))
    out = subprocess.run([sys.executable, "-m", "torchqat", "--cmake-prefix-path"], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == prefix


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "torchqat", "--version"], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == torchqat.__version__
