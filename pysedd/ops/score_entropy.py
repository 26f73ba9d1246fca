"""The score-entropy dispatcher (the loss's and `Graph.score_entropy`'s): the kernel when there is one for the
device and dtype, else the PyTorch statement `pysedd.ops.reference.score_entropy`."""
import torch

from pysedd.ops import backend
from pysedd.ops import reference


def _kernel_ok(log_score, sigma, *extra) -> bool:
    return (backend.kernel_available(log_score) and log_score.dim() == 3 and not sigma.requires_grad
            and not any(t.requires_grad for t in extra))


def score_entropy(graph, log_score, sigma, xt, x0) -> torch.Tensor:
    """Per-position score entropy [B, L] (float32) of log-scores [B, L, V] at noisy tokens xt given clean x0.

    graph: anything with `absorb` (a pysedd.graph.Absorbing/Uniform); sigma: [B] or [B, 1] total noise.
    (The PyTorch path keeps float64 for float64 input.)"""
    if _kernel_ok(log_score, sigma):
        return torch.ops.pysedd.score_entropy_fwd(log_score, xt.long(), x0.long(), sigma, backend.graph_code(graph))
    return reference.score_entropy(log_score, sigma, xt, x0, graph.absorb)


def score_entropy_weighted(graph, log_score, sigma, xt, x0, row_weight) -> torch.Tensor:
    """sum_{b,l} row_weight[b,l] * score_entropy[b,l] as a 0-d float32 tensor. With the kernel its gradient
    is formed in the same pass as the loss (one read of log_score instead of two), and backward is a scale."""
    if _kernel_ok(log_score, sigma, row_weight):
        return torch.ops.pysedd.score_entropy_weighted(log_score, xt.long(), x0.long(), sigma, row_weight,
                                                       backend.graph_code(graph))[0]
    return (score_entropy(graph, log_score, sigma, xt, x0) * row_weight).sum()

