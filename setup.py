"""Build and install codetr (the package lives in projects/codetr) with its compiled op ``codetr._C``.

The extension is a C++ CPU build by default; the CUDA kernels are added when a GPU is visible or
``FORCE_CUDA=1`` (``TORCH_CUDA_ARCH_LIST`` picks the architectures, as for any torch extension).
"""
import glob
import os

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("projects", "codetr", "layers", "csrc")


def _want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def get_extensions():
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    cxx_flags = ["-O3", "-fopenmp-simd"]
    define_macros = []
    if _want_cuda():
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        define_macros.append(("WITH_CUDA", None))
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return [
            CUDAExtension(
                "codetr._C",
                sources,
                define_macros=define_macros,
                extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            )
        ]
    return [CppExtension("codetr._C", sources, define_macros=define_macros, extra_compile_args={"cxx": cxx_flags})]


setup(
    name="codetr",
    version="0.1.0",
    description="Query-based object detectors (DINO, DN-DETR, Co-DETR, TOOD, ...) for Detectron2",
    license="Apache-2.0",
    package_dir={"codetr": "projects/codetr"},
    packages=["codetr"] + ["codetr." + p for p in find_packages("projects/codetr")],
    python_requires=">=3.9",
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)},
    zip_safe=False,
)
