"""Denoising score entropy (DSE): the SEDD training loss and the integrand of its likelihood bound."""
from __future__ import annotations

import torch

from .errors import UserError
from .graph import Graph
from .noise import Noise


def sample_t(batch_size: int, device, sampling_eps: float = 1e-3, generator=None) -> torch.Tensor:
    """t ~ U[sampling_eps, 1), one per sequence (not antithetic), as in the reference training loop."""
    return (1 - sampling_eps) * torch.rand(batch_size, device=device, generator=generator) + sampling_eps


def score_entropy_loss(
    model: torch.nn.Module,
    graph: Graph,
    noise: Noise,
    x0: torch.Tensor,
    t: torch.Tensor | None = None,
    perturbed: torch.Tensor | None = None,
    sampling_eps: float = 1e-3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sequence loss [B] = sum over positions of sigma'(t) * score_entropy.

    A sum over positions, not a mean: weighted by sigma'(t) and averaged over t, it is the negative ELBO of x0.
    t and the perturbed batch x_t are drawn when not given.
    """
    if x0.dim() != 2:
        raise UserError(f"x0 must be a [batch, length] tensor of token ids, got shape {tuple(x0.shape)}")
    graph.check_ids(x0, "x0")
    if graph.absorb and not torch.compiler.is_compiling() and bool((x0 == graph.mask_index).any()):
        raise UserError(f"x0 contains the MASK id {graph.mask_index}; clean data must hold real tokens only")
    if t is None:
        t = sample_t(x0.shape[0], x0.device, sampling_eps, generator)
    sigma, dsigma = noise(t)
    if perturbed is None:
        perturbed = graph.sample_transition(x0, sigma, generator=generator)
    elif perturbed.shape != x0.shape:
        raise UserError(f"perturbed batch has shape {tuple(perturbed.shape)}, x0 has {tuple(x0.shape)}")
    log_score = model(perturbed, sigma)
    loss = graph.score_entropy(log_score, sigma, perturbed, x0)
    return (dsigma.to(loss.dtype)[:, None] * loss).sum(-1)
