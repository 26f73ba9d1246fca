"""pysedd.ops: the score-entropy loss and the reverse step as compiled kernels (pysedd._C, CPU and CUDA),
with the pure-PyTorch reference (pysedd.ops.reference) as the spec and the fallback.

A kernel is used when the extension is loaded, has a kernel for the tensor's device and dtype (fp32/bf16),
and the reference is not forced: set PYSEDD_DISABLE_EXT=1 or use `pysedd.ops.use_reference()`."""
import os

import torch

try:
    from pysedd import _C  # noqa: F401  (importing it registers torch.ops.pysedd.*)

    HAS_EXT = True
except ImportError:
    HAS_EXT = False

from pysedd.ops import _registrations  # noqa: E402,F401

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


def kernel_available(t: torch.Tensor) -> bool:
    """True when a compiled kernel will handle this tensor."""
    return not _force_reference and t.device.type in KERNEL_DEVICES and t.dtype in KERNEL_DTYPES


from pysedd.ops.score_entropy import score_entropy, score_entropy_weighted  # noqa: E402
from pysedd.ops.sampling import reverse_step  # noqa: E402
from pysedd.ops.fused import fused_absorb_loss  # noqa: E402

__all__ = [
    "HAS_EXT", "KERNEL_DEVICES", "use_reference", "kernel_available",
    "score_entropy", "score_entropy_weighted", "reverse_step", "fused_absorb_loss",
]
