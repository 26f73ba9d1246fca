"""The one reverse-step dispatcher: one sampling iteration of the exact (float64) sampler, kernel or PyTorch.

* full log-scores [B, L, V] with a compiled kernel for their device and dtype: the kernel (a float64 race over V
  per position, seeded from `generator`);
* otherwise the PyTorch path, which touches only the positions that can move. For the absorbing graph these are the
  masked ones, and a masked position's weights are w_j = a s_j (j < N) and w_MASK (a = dt sigma' for Euler, expm1(D)
  for analytic), so the float64 race over V entries is run in two equivalent stages: unmask with probability
  sum_j w_j / (w_MASK^+ + sum_j w_j), then, only for the positions that unmask, draw j with probability
  s_j / sum s. Most masked positions stay masked at most steps, so the V-wide draw runs on a few rows. The samplers
  may pass `RowScores` (the masked positions' log-scores only, from `hidden_states` + `head`), which lets the model
  skip the output projection elsewhere: this is what `pysedd sample` takes on CPU.

The weights come from `pysedd.ops.reference.reverse_weights` (uniform graph) or its absorbing closed form above; the
draw from `pysedd.ops.categorical.sample_categorical`. docs/sampling.md explains when each path runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pysedd.ops import backend
from pysedd.errors import UserError
from pysedd.ops.categorical import sample_categorical
from pysedd.ops.reference import reverse_weights

@dataclass
class RowScores:
    """Log-scores [n, V] of the positions `rows` = (batch index [n], position index [n]) only (absorb: the masked ones)."""

    rows: tuple[torch.Tensor, torch.Tensor]
    values: torch.Tensor


def _absorb_rows_step(mask_index: int, log_score: torch.Tensor, coef: torch.Tensor, predictor: str,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """For masked rows' log-scores [n, V] and coef [n]: (which rows unmask [n] bool, their new tokens)."""
    real = log_score[:, :mask_index]
    if real.dtype in (torch.float16, torch.bfloat16):
        real = real.float()
    lse = torch.logsumexp(real, -1).double()  # log sum_{j < N} s_j
    if predictor == "denoise":
        move = torch.ones_like(lse, dtype=torch.bool)
    else:
        a = coef if predictor == "euler" else torch.expm1(coef)
        w_move = a * lse.exp()
        stay = 1.0 if predictor == "euler" else log_score[:, mask_index].double().exp()
        w_stay = (stay - w_move).clamp_min(0.0)  # a negative stay-weight never wins the race
        total = w_stay + w_move
        p_move = torch.where(total > 0, w_move / total, 0.0)
        move = torch.rand(p_move.shape, dtype=torch.float64, device=p_move.device, generator=generator) < p_move
    picked = real[move].double()
    tokens = sample_categorical(torch.exp(picked - lse[move, None]), generator)
    return move, tokens


def _rows_step(graph, log_score, x, coef, predictor, frozen, generator) -> torch.Tensor:
    out = x.clone()
    if isinstance(log_score, RowScores):
        rows, values = log_score.rows, log_score.values
    else:
        movable = torch.ones_like(x, dtype=torch.bool) if frozen is None else ~frozen
        if graph.absorb:
            movable &= x == graph.dim - 1  # unmasked tokens never change
        rows = movable.nonzero(as_tuple=True)
        values = log_score[rows]
    if rows[0].numel() == 0:
        return out
    c = coef[rows[0]]
    if graph.absorb:
        move, tokens = _absorb_rows_step(graph.dim - 1, values, c, predictor, generator)
        out[rows[0][move], rows[1][move]] = tokens
        return out
    weights = reverse_weights(values.double()[:, None], x[rows][:, None], c, predictor, False)[:, 0]
    out[rows] = sample_categorical(weights, generator)
    return out


def reverse_step(graph, log_score, x: torch.Tensor, coef: torch.Tensor, predictor: str,
                 frozen: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next tokens [B, L] (int64) drawn exactly from the predictor's weights at current tokens x [B, L].

    log_score [B, L, V] (model output, self-entry zeroed) or RowScores. coef [B] (float64): dt*sigma'(t) for
    "euler", sigma(t) - sigma(t - dt) for "analytic", sigma(eps) for "denoise". frozen [B, L] bool: positions kept
    as they are (conditioning). graph: anything with `absorb` and `dim` (MASK = dim - 1 for absorb)."""
    if predictor not in backend.PREDICTOR_CODES:
        raise UserError(f"unknown predictor {predictor!r}; choose one of {', '.join(backend.PREDICTOR_CODES)}")
    if frozen is not None and (frozen.dtype != torch.bool or frozen.shape != x.shape):
        raise UserError(f"frozen must be a bool tensor of shape {tuple(x.shape)}")
    coef = coef.to(torch.float64)
    if isinstance(log_score, RowScores):
        return _rows_step(graph, log_score, x, coef, predictor, frozen, generator)
    if x.shape != log_score.shape[:-1]:
        raise UserError(f"x has shape {tuple(x.shape)} but log_score has {tuple(log_score.shape)}")
    if backend.kernel_available(log_score) and log_score.dim() == 3:
        device = generator.device if generator is not None else "cpu"
        seed, offset = torch.randint(0, 2**62, (2,), generator=generator, device=device).tolist()
        return torch.ops.pysedd.reverse_step(log_score, x.long(), coef, frozen, backend.graph_code(graph),
                                             backend.PREDICTOR_CODES[predictor], seed, offset % 2**32)
    return _rows_step(graph, log_score, x, coef, predictor, frozen, generator)
