"""Denoising score entropy (DSE): the SEDD training loss and the integrand of its likelihood bound."""
from __future__ import annotations

import torch

from . import ops
from .errors import UserError
from .graph import Graph
from .ops.reference import esigm1
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
    fused: bool = False,
) -> torch.Tensor:
    """Per-sequence loss [B] = sum over positions of sigma'(t) * score_entropy.

    A sum over positions, not a mean: weighted by sigma'(t) and averaged over t, it is the negative ELBO of x0.
    t and the perturbed batch x_t are drawn when not given.

    fused=True (absorb + scale_by_sigma only) projects only the masked rows' hidden states, in chunks, with the
    loss gradient formed in the forward pass (pysedd.ops.fused_absorb_loss): [B, L, V] log-scores never exist.
    The values are the same; the gradient is exact for reductions that weight sequences equally (sum, mean).
    """
    if x0.dim() != 2:
        raise UserError(f"x0 must be a [batch, length] tensor of token ids, got shape {tuple(x0.shape)}")
    graph.check_ids(x0, "x0")
    if graph.absorb and not torch.compiler.is_compiling() and bool((x0 == graph.mask_index).any()):
        raise UserError(f"x0 contains the MASK id {graph.mask_index}; clean data must hold real tokens only")
    if t is None:
        t = sample_t(x0.shape[0], x0.device, sampling_eps, generator)
    t = torch.as_tensor(t, device=x0.device).reshape(-1)  # [B], [B, 1] or a scalar -> [B]
    if t.numel() not in (1, x0.shape[0]):
        raise UserError(f"t has {t.numel()} entries for a batch of {x0.shape[0]} sequences")
    t = t.expand(x0.shape[0])
    sigma, dsigma = noise(t)
    if perturbed is None:
        perturbed = graph.sample_transition(x0, sigma, generator=generator)
    elif perturbed.shape != x0.shape:
        raise UserError(f"perturbed batch has shape {tuple(perturbed.shape)}, x0 has {tuple(x0.shape)}")
    if fused:
        return _fused_absorb_loss(model, graph, x0, perturbed, sigma, dsigma)
    log_score = model(perturbed, sigma)
    loss = ops.score_entropy(graph, log_score, sigma, perturbed, x0)
    return (dsigma.to(loss.dtype)[:, None] * loss).sum(-1)


def _fused_absorb_loss(model, graph, x0, perturbed, sigma, dsigma) -> torch.Tensor:
    """sigma' * score entropy summed per sequence, from the masked rows' hidden states
    (docs/kernels.md#fused-output-layer).

    Under scale_by_sigma, sigma' * l = (sigma'/e_sigma) * [(1/N) sum_y e^{raw_y} - raw_x0 + log N - 1] on the raw logits."""
    if not graph.absorb or not getattr(model, "scale_by_sigma", False):
        raise UserError("fused=True needs the absorbing graph and a model with scale_by_sigma")
    masked = perturbed == graph.mask_index
    h = model.hidden_states(perturbed, sigma)[masked]
    batch_of_row = masked.nonzero()[:, 0]
    row_weight = (dsigma.double() / esigm1(sigma.double()))[batch_of_row].float()
    linear = model.output_layer.linear
    total, rows = ops.fused_absorb_loss(h, linear.weight, linear.bias, x0[masked], row_weight,
                                        n_real=graph.n_tokens, return_rows=True)
    per_seq = torch.zeros(x0.shape[0], dtype=torch.float32, device=x0.device).index_add(0, batch_of_row, rows)
    # values per sequence from the rows, gradient from the fused scalar: d(sum_b loss_b) = d(total)
    return per_seq + (total - total.detach()) / x0.shape[0]
