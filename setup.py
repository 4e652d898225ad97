"""Builds and installs the torchqat Python package.

One build definition: this drives the project's CMakeLists.txt (in ./build, so the C++ tests
and the Python extension share one incremental build) and ships libtorchqat and torchqat._C
inside the package. Install with `pip install --no-build-isolation .` so the installed torch
is the one built against.
"""
import glob
import os
import shutil
import subprocess
import sys

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
        ]
        if os.environ.get("TORCHQAT_USE_CUDA"):
            cfg.append(f"-DTORCHQAT_USE_CUDA={os.environ['TORCHQAT_USE_CUDA']}")
        subprocess.check_call(cfg, cwd=build_dir)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", ".", "--target", "torchqat", "torchqat_python", "-j", jobs],
                              cwd=build_dir)
        out_dir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        os.makedirs(out_dir, exist_ok=True)
        built = glob.glob(os.path.join(build_dir, "libtorchqat.so*")) + glob.glob(os.path.join(build_dir, "_C*.so"))
        if not built:
            raise RuntimeError(f"CMake build in {build_dir} produced no libtorchqat / _C")
        for f in built:
            shutil.copy2(f, out_dir)


setup(
    name="torchqat",
    version="0.1.0",
    description="Quantization-aware training and calibration for LibTorch, exporting QDQ ONNX for TensorRT",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[CMakeExtension("torchqat._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    install_requires=["torch", "numpy"],
    extras_require={"onnx": ["onnx", "onnxruntime"], "progress": ["tqdm"], "plot": ["matplotlib"]},
    zip_safe=False,
)
