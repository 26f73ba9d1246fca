"""Build of the pysedd._C torch extension (docs/kernels.md#build). Install with:

    pip install --no-build-isolation -e .        # MAX_JOBS=1 or 2 on small machines

The CPU extension is always built; CUDA kernels (csrc/cuda/*.cu) are added when torch has CUDA and a
toolkit is found. Environment switches:
  PYSEDD_BUILD_EXT=0     pure-Python install (pysedd.ops falls back to the PyTorch reference)
  PYSEDD_EXT_OPTIONAL=1  a failed extension build only warns; the package falls back to the reference
  PYSEDD_CUDA=0|1        never / always build CUDA (1 fails loudly when it is impossible); default: auto
  PYSEDD_CPU_ARCH=auto|avx2|none   AVX2+FMA+F16C flags (auto: when the build host supports them)
  DEBUG=1                keep debug info (-g -O0)
"""
import glob
import os
import sys
import warnings

import torch  # noqa: F401  (setup needs the installed torch; never build with isolation)
from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _host_has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return {"avx2", "fma", "f16c"} <= set(flags)


def _cpu_arch_flags():
    arch = os.environ.get("PYSEDD_CPU_ARCH", "auto")
    if arch not in ("auto", "avx2", "none"):
        sys.exit(f"setup.py: PYSEDD_CPU_ARCH must be auto, avx2 or none, got {arch!r}")
    if arch == "avx2" or (arch == "auto" and _host_has_avx2()):
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def _cuda_home():
    """The toolkit root (holding lib64/ or lib/ libcudart), or None. Fails loudly under PYSEDD_CUDA=1."""
    want = os.environ.get("PYSEDD_CUDA", "auto")
    if want == "0":
        return None
    home = cpp_extension.CUDA_HOME
    problem = None
    if torch.version.cuda is None:
        problem = f"torch {torch.__version__} is a CPU build"
    elif home is None:
        problem = "no CUDA toolkit found (set CUDA_HOME to the directory holding lib64/libcudart*)"
    elif not (glob.glob(os.path.join(home, "lib64", "libcudart*")) or glob.glob(os.path.join(home, "lib", "libcudart*"))):
        problem = f"CUDA_HOME={home} has no lib64/libcudart* (is nvcc on PATH a wrapper? set CUDA_HOME)"
    if problem:
        if want == "1":
            sys.exit(f"setup.py: PYSEDD_CUDA=1 but the CUDA kernels cannot be built: {problem}")
        print(f"setup.py: building the CPU extension only ({problem})")
        return None
    print(f"setup.py: building CUDA kernels with the toolkit at {home}")
    return home


def _extensions():
    if os.environ.get("PYSEDD_BUILD_EXT", "1") == "0":
        print("setup.py: PYSEDD_BUILD_EXT=0, installing without the C++ extension")
        return []
    sources = _rel("csrc/*.cpp") + _rel("csrc/api/*.cpp") + _rel("csrc/cpu/*.cpp")
    opt = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
    cxx = opt + ["-fopenmp"] + _cpu_arch_flags()
    kwargs = dict(
        name="pysedd._C",
        include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")],
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
        define_macros=[("Py_LIMITED_API", "0x030A0000")],
    )
    if _cuda_home() is None:
        return [cpp_extension.CppExtension(sources=sources, extra_compile_args={"cxx": cxx}, **kwargs)]
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")  # no visible GPU would otherwise crash arch detection
    nvcc = (["-O0", "-g", "-G"] if DEBUG else ["-O3", "-lineinfo"]) + ["--threads", "2", "--expt-relaxed-constexpr"]
    return [cpp_extension.CUDAExtension(sources=sources + _rel("csrc/cuda/*.cu"),
                                        extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)]


class BuildExtension(cpp_extension.BuildExtension):
    """With PYSEDD_EXT_OPTIONAL=1 a failed build warns instead of failing the install and the failed extension is
    dropped (ninja raises RuntimeError, so setuptools' Extension(optional=True) would not catch it)."""

    optional = os.environ.get("PYSEDD_EXT_OPTIONAL", "0") == "1"

    def _guard(self, build, names):
        try:
            build()
        except Exception as err:  # noqa: BLE001 - compiler checks, ninja and compiler failures alike
            if not self.optional:
                raise
            warnings.warn(f"pysedd: building {', '.join(names)} failed ({err}); pysedd.ops will use the PyTorch "
                          "reference")
            self.extensions = [e for e in self.extensions if e.name not in names]

    def build_extensions(self):
        self._guard(super().build_extensions, [e.name for e in self.extensions])

    def build_extension(self, ext):
        self._guard(lambda: super(BuildExtension, self).build_extension(ext), [ext.name])


ext_modules = _extensions()
setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)} if ext_modules else {},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
