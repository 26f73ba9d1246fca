"""Weights of one reverse step, and the float64 categorical draw they feed.

`score` here is the ratio (exp of the network's log-score). Each function returns, for every position, the
(unnormalised) weights of the token that position takes next; `sample_categorical` draws from them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.categorical import sample_categorical  # noqa: F401  (re-exported)

from ..graph import Graph
from ..noise import Noise


def _time_column(t, batch: int, device) -> torch.Tensor:
    """t as a float64 [B, 1] column, from a scalar, [B] or [B, 1]."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device).reshape(-1, 1)
    return t.expand(batch, 1) if t.shape[0] == 1 else t


def euler_probs(graph: Graph, noise: Noise, score: torch.Tensor, x: torch.Tensor, t, dt: float) -> torch.Tensor:
    """onehot(x) + dt * sigma'(t) * reverse_rate(x, score)."""
    t = _time_column(t, x.shape[0], x.device)
    _, rate = noise(t)
    rev = (dt * rate).to(score.dtype)[..., None] * graph.reverse_rate(x, score)
    return F.one_hot(x, graph.dim).to(rev) + rev


def analytic_probs(graph: Graph, noise: Noise, score: torch.Tensor, x: torch.Tensor, t, dt: float) -> torch.Tensor:
    """Tweedie tau-leaping: staggered_score(score, D) * transp_transition(x, D), D = sigma(t) - sigma(t - dt)."""
    t = _time_column(t, x.shape[0], x.device)
    dsigma = (noise.total_noise(t) - noise.total_noise((t - dt).clamp_min(0.0))).to(score.dtype)
    return graph.staggered_score(score, dsigma) * graph.transp_transition(x, dsigma)


def denoise_probs(graph: Graph, noise: Noise, score: torch.Tensor, x: torch.Tensor, t) -> torch.Tensor:
    """The final step from t = eps to 0: the analytic update with D = sigma(eps); the MASK column is dropped."""
    t = _time_column(t, x.shape[0], x.device)
    sigma = noise.total_noise(t).to(score.dtype)
    probs = graph.staggered_score(score, sigma) * graph.transp_transition(x, sigma)
    return probs[..., :-1] if graph.absorb else probs
