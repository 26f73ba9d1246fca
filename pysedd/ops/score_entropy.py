"""Public score-entropy API: the kernel when available for the device/dtype, else the graph's reference."""
import torch

import pysedd.ops as ops


def _graph_code(graph) -> int:
    return 0 if graph.absorb else 1


def _kernel_ok(log_score, sigma, *extra) -> bool:
    return (ops.kernel_available(log_score) and log_score.dim() == 3 and not sigma.requires_grad
            and not any(t.requires_grad for t in extra))


def score_entropy(graph, log_score, sigma, xt, x0) -> torch.Tensor:
    """Per-position score entropy [B, L] (float32) of log-scores [B, L, V] at noisy tokens xt given clean x0.

    graph: a pysedd.graph.Absorbing/Uniform (graph.absorb, graph.dim); sigma: [B] or [B, 1] total noise.
    (The reference keeps float64 for float64 input.)"""
    if _kernel_ok(log_score, sigma):
        return torch.ops.pysedd.score_entropy_fwd(log_score, xt.long(), x0.long(), sigma, _graph_code(graph))
    return graph.score_entropy(log_score, sigma, xt, x0)


def score_entropy_weighted(graph, log_score, sigma, xt, x0, row_weight) -> torch.Tensor:
    """sum_{b,l} row_weight[b,l] * score_entropy[b,l] as a 0-d float32 tensor. With the kernel its gradient
    is formed in the same pass as the loss (one read of log_score instead of two), and backward is a scale."""
    if _kernel_ok(log_score, sigma, row_weight):
        return torch.ops.pysedd.score_entropy_weighted(log_score, xt.long(), x0.long(), sigma, row_weight,
                                                       _graph_code(graph))[0]
    return (score_entropy(graph, log_score, sigma, xt, x0) * row_weight).sum()

