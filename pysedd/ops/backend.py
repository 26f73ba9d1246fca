"""Which backend runs an op: the compiled kernels (pysedd._C) when loaded and not disabled, and the kernels' integer
codes. A leaf module, so the ops submodules depend on it and not on the package that imports them."""
import os

import torch

try:
    from pysedd import _C  # noqa: F401  (importing it registers torch.ops.pysedd.*)

    HAS_EXT = True
except ImportError:
    HAS_EXT = False

# device types with a compiled kernel (a CPU-only build meeting a CUDA tensor falls back to the reference)
KERNEL_DEVICES = frozenset(
    dev for dev in ("cpu", "cuda")
    if HAS_EXT and torch._C._dispatch_has_kernel_for_dispatch_key("pysedd::score_entropy_fwd", dev.upper())
)
KERNEL_DTYPES = (torch.float32, torch.bfloat16)

_force_reference = os.environ.get("PYSEDD_DISABLE_EXT", "0") == "1"


class use_reference:
    """Force (True) or allow (False) the PyTorch reference. `pysedd.ops.use_reference(True)` sets it until changed;
    `with pysedd.ops.use_reference():` sets it for the block and restores the previous setting afterwards."""

    def __init__(self, enabled: bool = True):
        global _force_reference
        self._previous = _force_reference
        _force_reference = bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _force_reference
        _force_reference = self._previous
        return False


# The kernels' integer codes (csrc/include/pysedd/math.h); every Python caller takes the names from here.
PREDICTOR_CODES = {"euler": 0, "analytic": 1, "denoise": 2}
GRAPH_CODES = {"absorb": 0, "uniform": 1}


def graph_code(graph) -> int:
    """The kernel code of a graph (anything with an `absorb` attribute)."""
    return GRAPH_CODES["absorb" if graph.absorb else "uniform"]


def kernel_available(t: torch.Tensor) -> bool:
    """True when a compiled kernel will handle this tensor."""
    return not _force_reference and t.device.type in KERNEL_DEVICES and t.dtype in KERNEL_DTYPES
