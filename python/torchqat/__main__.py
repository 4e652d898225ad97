"""`python -m torchqat` (or `torchqat`): what a bug report needs, and the CMake prefix for C++ users.

  python -m torchqat                       version, torch, CUDA kernels, where the library lives
  python -m torchqat --cmake-prefix-path   the prefix to give CMake for find_package(torchqat)
"""
import argparse
import os
import sys


def package_dir():
    """The installed torchqat package folder."""
    return os.path.dirname(os.path.abspath(__file__))


def cmake_prefix_path():
    """The CMake prefix inside the installed package (holds lib/cmake/torchqat), or None in a bare tree."""
    prefix = package_dir()
    config = os.path.join(prefix, "lib", "cmake", "torchqat", "torchqatConfig.cmake")
    return prefix if os.path.exists(config) else None


def loaded_library(name="libtorchqat"):
    """The path of the shared library this process loaded for `name` (Linux), else None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if os.path.basename(path).startswith(name + "."):
                    return path
    except OSError:
        pass
    return None


def report():
    """Lines describing this installation."""
    import torch
    import torchqat
    from torchqat import _C

    archs = _C.cuda_archs().split() if _C.cuda_compiled() else []
    gpu = (f"{torch.cuda.device_count()} visible ({torch.cuda.get_device_name(0)})"
           if torch.cuda.is_available() else "none visible")
    prefix = cmake_prefix_path()
    return [
        f"torchqat {torchqat.__version__}",
        f"torch {torch.__version__} (torchqat compiled against LibTorch {_C.torch_version()})",
        f"python {sys.version.split()[0]} ({sys.executable})",
        "CUDA kernels: " + (f"compiled for {', '.join(archs) or 'unknown architectures'}" if archs
                            else "not compiled (CPU-only build)"),
        f"CUDA devices: {gpu}",
        f"package: {package_dir()}",
        f"libtorchqat: {loaded_library() or 'not found in this process'}",
        "CMake prefix: " + (f"{prefix}  (find_package(torchqat) with -DCMAKE_PREFIX_PATH=\"{prefix};"
                            "$(python -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')\")"
                            if prefix else "none (not an installed package; use cmake --install)"),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m torchqat", description=__doc__.splitlines()[0])
    parser.add_argument("--cmake-prefix-path", action="store_true",
                        help="print the CMake prefix of the installed package and exit")
    parser.add_argument("--version", action="store_true", help="print torchqat's version and exit")
    args = parser.parse_args(argv)
    if args.cmake_prefix_path:
        prefix = cmake_prefix_path()
        if prefix is None:
            print("torchqat: this package has no CMake config (not installed by pip); use cmake --install",
                  file=sys.stderr)
            return 1
        print(prefix)
        return 0
    if args.version:
        import torchqat
        print(torchqat.__version__)
        return 0
    print("\n".join(report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
