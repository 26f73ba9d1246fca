"""pysedd.ops: the score-entropy loss and the reverse step as compiled kernels (pysedd._C, CPU and CUDA),
with the pure-PyTorch reference (pysedd.ops.reference) as the spec and the fallback.

A kernel is used when the extension is loaded, has a kernel for the tensor's device and dtype (fp32/bf16),
and the reference is not forced: set PYSEDD_DISABLE_EXT=1 or use `pysedd.ops.use_reference()`."""
from pysedd.ops import _registrations  # noqa: F401  (fake kernels and autograd of the compiled ops)
from pysedd.ops.backend import (GRAPH_CODES, HAS_EXT, KERNEL_DEVICES, KERNEL_DTYPES, PREDICTOR_CODES, graph_code,
                                kernel_available, use_reference)
from pysedd.ops.categorical import sample_categorical, sample_categorical_reference
from pysedd.ops.fused import fused_absorb_loss
from pysedd.ops.sampling import RowScores, reverse_step
from pysedd.ops.score_entropy import score_entropy, score_entropy_weighted

__all__ = [
    "HAS_EXT", "KERNEL_DEVICES", "KERNEL_DTYPES", "use_reference", "kernel_available", "PREDICTOR_CODES",
    "GRAPH_CODES", "graph_code", "score_entropy", "score_entropy_weighted", "reverse_step", "RowScores",
    "fused_absorb_loss", "sample_categorical", "sample_categorical_reference",
]
