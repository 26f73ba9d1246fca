"""One reverse step over a whole batch: the compiled `pysedd.ops.reverse_step` when it has a kernel for the tensor,
otherwise `_reverse_step`.

`_reverse_step` works only on the positions that can move. For the absorbing graph those are the masked ones, and a
masked position's step weights are w_j = a s_j (j < N) and w_MASK (a = dt sigma' for Euler, expm1(D) for analytic),
so the float64 exponential race over V entries is done in two equivalent stages: unmask with probability
sum_j w_j / (w_MASK^+ + sum_j w_j), then, only for the positions that unmask, draw j with probability s_j / sum s.
Most masked positions stay masked at most steps, so the V-wide draw runs on a few rows instead of all B x L.
Samplers may pass `RowScores` (log-scores of the masked positions only), which lets the model skip the output
projection everywhere else.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class RowScores:
    """Log-scores [n, V] of the positions `rows` = (batch index [n], position index [n]) only (absorb: the masked ones)."""

    rows: tuple[torch.Tensor, torch.Tensor]
    values: torch.Tensor


def kernel_enabled(device: torch.device) -> bool:
    """True when pysedd.ops has a compiled reverse-step kernel for float32 tensors on this device."""
    check = getattr(_ops, "kernel_available", None) if _ops is not None else None
    return bool(check is not None and check(torch.empty(0, device=device)))


def _absorb_step(graph: Graph, log_score: torch.Tensor, coef: torch.Tensor, predictor: str,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """For masked rows' log-scores [n, V] and coef [n]: (which rows unmask [n] bool, their new tokens)."""
    real = log_score[:, : graph.n_tokens]
    if real.dtype in (torch.float16, torch.bfloat16):
        real = real.float()
    lse = torch.logsumexp(real, -1).double()  # log sum_{j < N} s_j
    if predictor == "denoise":
        move = torch.ones_like(lse, dtype=torch.bool)
    else:
        a = coef if predictor == "euler" else torch.expm1(coef)
        w_move = a * lse.exp()
        stay = 1.0 if predictor == "euler" else log_score[:, graph.mask_index].double().exp()
        w_stay = (stay - w_move).clamp_min(0.0)  # a negative stay-weight never wins the race
        total = w_stay + w_move
        p_move = torch.where(total > 0, w_move / total, 0.0)
        move = torch.rand(p_move.shape, dtype=torch.float64, device=p_move.device, generator=generator) < p_move
    picked = real[move].double()
    tokens = sample_categorical(torch.exp(picked - lse[move, None]), generator)
    return move, tokens


def _reverse_step(graph: Graph, log_score, x: torch.Tensor, coef: torch.Tensor, predictor: str,
                  frozen: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next ids [B, L]. coef [B] float64: dt * sigma'(t) ("euler"), sigma(t) - sigma(t - dt) ("analytic") or
    sigma(eps) ("denoise"); frozen [B, L] bool positions are kept. Same contract as pysedd.ops.reverse_step, plus
    `log_score` may be RowScores."""
    coef = coef.to(torch.float64)
    out = x.clone()
    if isinstance(log_score, RowScores):
        rows, values = log_score.rows, log_score.values
    else:
        movable = torch.ones_like(x, dtype=torch.bool) if frozen is None else ~frozen
        if graph.absorb:
            movable &= x == graph.mask_index  # unmasked tokens never change
        rows = movable.nonzero(as_tuple=True)
        values = log_score[rows]
    if rows[0].numel() == 0:
        return out
    c = coef[rows[0]]
    if graph.absorb:
        move, tokens = _absorb_step(graph, values, c, predictor, generator)
        out[rows[0][move], rows[1][move]] = tokens
        return out
    score, xs = values.double().exp(), x[rows]
    if predictor == "euler":
        weights = F.one_hot(xs, graph.dim).double() + c[:, None] * graph.reverse_rate(xs, score)
    else:
        weights = graph.staggered_score(score, c) * graph.transp_transition(xs, c)
    out[rows] = sample_categorical(weights, generator)
    return out


def reverse_step(graph: Graph, log_score, x: torch.Tensor, coef: torch.Tensor, predictor: str,
                 frozen: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    if predictor not in PREDICTORS:
        raise UserError(f"unknown predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")
    if isinstance(log_score, torch.Tensor) and _ops is not None and getattr(_ops, "kernel_available", lambda t: False)(log_score):
        return _ops.reverse_step(graph, log_score, x, coef, predictor, frozen=frozen, generator=generator)
    return _reverse_step(graph, log_score, x, coef, predictor, frozen=frozen, generator=generator)
