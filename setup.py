"""Builds and installs the torchqat Python package.

One build definition: this drives the project's CMakeLists.txt (in ./build, so the C++ tests
and the Python extension share one incremental build). The package ships torchqat._C and, as a
CMake prefix inside the package, libtorchqat (lib/), the public headers (include/) and
torchqatConfig.cmake (lib/cmake/torchqat/), so C++ programs can find_package(torchqat) against a
pip-installed torchqat (`python -m torchqat --cmake-prefix-path`).

`pip install .` builds in an isolated environment with the pinned torch (pyproject.toml);
`pip install --no-build-isolation .` builds against the torch already installed.
"""
import glob
import os
import shutil
import subprocess
import sys

import torch
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.environ.get("TORCHQAT_BUILD_DIR", os.path.join(ROOT, "build"))
        os.makedirs(build_dir, exist_ok=True)
        cfg = [
            "cmake", ROOT, f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('TORCHQAT_BUILD_TYPE', 'Release')}",
            "-DCMAKE_INSTALL_LIBDIR=lib", "-DCMAKE_INSTALL_INCLUDEDIR=include",
        ]
        if os.environ.get("TORCHQAT_USE_CUDA"):
            cfg.append(f"-DTORCHQAT_USE_CUDA={os.environ['TORCHQAT_USE_CUDA']}")
        subprocess.check_call(cfg, cwd=build_dir)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", ".", "--target", "torchqat", "torchqat_python", "-j", jobs],
                              cwd=build_dir)
        out_dir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        os.makedirs(out_dir, exist_ok=True)
        # A build folder from before the prefix layout holds libtorchqat beside _C, where _C's
        # RPATH ($ORIGIN first) would load that stale copy: remove it.
        for stale in glob.glob(os.path.join(out_dir, "libtorchqat.so*")):
            os.remove(stale)
        modules = glob.glob(os.path.join(build_dir, "_C*.so"))
        if not modules:
            raise RuntimeError(f"CMake build in {build_dir} produced no torchqat._C")
        for f in modules:
            shutil.copy2(f, out_dir)
        # libtorchqat, headers and the CMake package config, laid out as a prefix in the package.
        subprocess.check_call(["cmake", "--install", ".", "--prefix", out_dir], cwd=build_dir,
                              stdout=subprocess.DEVNULL)
        # Read by torchqat._loader before it loads _C, so a torch of another series gets a clear
        # message instead of an undefined-symbol error.
        with open(os.path.join(out_dir, "_build_info.py"), "w") as f:
            f.write('"""Written by setup.py at build time."""\n')
            f.write(f"TORCH_VERSION = {TORCH_SERIES!r}\n")


# libtorchqat is compiled against this torch's C++ ABI: the package needs the same series.
TORCH_SERIES = ".".join(torch.__version__.split("+")[0].split(".")[:2])

setup(
    name="torchqat",
    version="0.1.0",
    description="Quantization-aware training and calibration for LibTorch, exporting QDQ ONNX for TensorRT",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[CMakeExtension("torchqat._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    install_requires=[f"torch=={TORCH_SERIES}.*", "numpy"],
    extras_require={
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        "progress": ["tqdm"],
        "plot": ["matplotlib"],
        "all": ["onnx", "onnxruntime", "onnxscript", "tqdm", "matplotlib"],
    },
    entry_points={"console_scripts": ["torchqat=torchqat.__main__:main"]},
    zip_safe=False,
)
