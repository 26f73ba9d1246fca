"""One reverse step over a whole batch: the compiled `pysedd.ops.reverse_step` when it has a kernel for the tensor,
otherwise `_reverse_step`, which computes float64 weights only on the positions that can move (for the absorbing
graph: the masked, non-fixed ones) instead of on all B x L x V entries.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..graph import Graph
from .weights import sample_categorical

try:
    from .. import ops as _ops
except ImportError:  # the kernels package is optional
    _ops = None

PREDICTORS = ("euler", "analytic", "denoise")


def _reverse_step(graph: Graph, log_score: torch.Tensor, x: torch.Tensor, coef: torch.Tensor, predictor: str,
                  frozen: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next ids [B, L]. coef [B] float64: dt * sigma'(t) ("euler"), sigma(t) - sigma(t - dt) ("analytic") or
    sigma(eps) ("denoise"); frozen [B, L] bool positions are kept. Same contract as pysedd.ops.reverse_step."""
    movable = torch.ones_like(x, dtype=torch.bool) if frozen is None else ~frozen
    if graph.absorb:
        movable &= x == graph.mask_index  # unmasked tokens never change
    rows = movable.nonzero(as_tuple=True)
    if rows[0].numel() == 0:
        return x.clone()
    score = log_score[rows].double().exp()  # [n, V]: float64 on the movable rows only
    xs, c = x[rows], coef.to(torch.float64)[rows[0]]
    if predictor == "euler":
        weights = F.one_hot(xs, graph.dim).double() + c[:, None] * graph.reverse_rate(xs, score)
    else:
        weights = graph.staggered_score(score, c) * graph.transp_transition(xs, c)
        if predictor == "denoise" and graph.absorb:
            weights = weights[:, :-1]  # no mask survives the last step
    out = x.clone()
    out[rows] = sample_categorical(weights, generator)
    return out


def reverse_step(graph: Graph, log_score: torch.Tensor, x: torch.Tensor, coef: torch.Tensor, predictor: str,
                 frozen: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    if predictor not in PREDICTORS:
        raise UserError(f"unknown predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")
    if _ops is not None and getattr(_ops, "kernel_available", lambda t: False)(log_score):
        return _ops.reverse_step(graph, log_score, x, coef, predictor, frozen=frozen, generator=generator)
    return _reverse_step(graph, log_score, x, coef, predictor, frozen=frozen, generator=generator)
