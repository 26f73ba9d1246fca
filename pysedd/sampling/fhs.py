"""Exact batched first-hitting sampler (FHS) for the absorbing graph.

Under the reverse process of the absorbing graph every masked position has the same unmasking hazard, so, given n
masked positions with mask probability m = 1 - e^{-sigma(t)}, the next event has m' = m * u^{1/n} (u ~ U(0, 1)), the
position is uniform among the masked ones, and its token is drawn from the network's prediction at sigma(t_event).
Every row keeps its own clock m: one batched call, with each row's own sigma, unmasks exactly one token in every row,
so an L-token sample costs exactly L network calls at any batch size, with no idle steps and no final denoiser
(Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic ..."). Only the chosen positions go through
the output projection (SEDD's `hidden_states` + `head`), and the token draw is float64.

This treats the network's prediction as a normalised denoiser p(x0 | x_t) (its total unmasking rate is taken to be
the ideal one), as every masked-diffusion sampler does. `tokens_per_call = k > 1` unmasks the next k events of each
row from one prediction (ceil(L / k) calls): faster, but no longer exact, since the k tokens are drawn independently.
"""
from __future__ import annotations

import torch

from ..errors import UserError
from ..graph import Graph
from ..noise import Noise
from .conditioning import Conditioning, clamp, resolve
from .pc import check_positive_int, model_device
from .result import EOS_ID, SampleOutput, Stopwatch, eos_lengths
from ..ops.categorical import check_categorical, sample_categorical, sample_categorical_reference


def log_scores_at(model: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Log-scores [B, k, V] at positions idx [B, k], projecting only those rows when the model allows it."""
    if hasattr(model, "hidden_states") and hasattr(model, "head"):
        h = model.hidden_states(x, sigma)
        h = h.gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))
        return model.head(h, x.gather(1, idx), sigma)
    out = model(x, sigma)
    return out.gather(1, idx[..., None].expand(-1, -1, out.shape[-1]))


@torch.no_grad()
def fhs_sample(
    model: torch.nn.Module,
    graph: Graph | None,
    noise: Noise | None,
    batch_size: int,
    length: int,
    *,
    tokens_per_call: int = 1,
    conditioning: Conditioning | None = None,
    trim_eos: bool = False,
    eos_id: int = EOS_ID,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device=None,
    categorical: str = "float64",
) -> SampleOutput:
    """categorical="float64" draws each token from its exact law; "reference" draws it with the official sampler's
    float32 Gumbel-max on exp(log-score - max) in the network's dtype (the official code has no FHS; this setting
    only carries its categorical draw and its truncation over). Event times and positions are float64 either way."""
    check_categorical(categorical)
    if graph is None or noise is None:  # None: the model's own (model.config)
        graph, noise = model.graph_and_noise(graph, noise)
    if not graph.absorb:
        raise UserError("the first-hitting sampler needs the absorbing graph; use pc_sample for the uniform graph")
    for name, value in (("batch_size", batch_size), ("length", length), ("tokens_per_call", tokens_per_call)):
        check_positive_int(name, value)
    device = model_device(model, device)
    if generator is None and seed is not None:
        generator = torch.Generator(device).manual_seed(seed)
    model.eval()
    fixed, values = resolve(conditioning, batch_size, length, graph.n_tokens, device)
    clock = Stopwatch(device)

    mask_id, n_real = graph.mask_index, graph.n_tokens
    x = clamp(graph.sample_limit(batch_size, length, device=device), fixed, values)
    masked = x == mask_id
    n_masked = masked.sum(1)
    one = torch.ones(batch_size, dtype=torch.float64, device=device)
    mask_prob = -torch.expm1(-noise.total_noise(one))  # per-row clock, starting at t = 1
    nfe, k = 0, tokens_per_call
    while True:
        rows = (n_masked > 0).nonzero().flatten()
        if rows.numel() == 0:
            break
        n, m = n_masked[rows], mask_prob[rows]
        kk = min(k, int(n.max()))
        # the next kk event times of each row: m <- m * u^(1 / n), then n - 1, ... (exponent 0 past the row's last)
        u = torch.rand(rows.numel(), kk, dtype=torch.float64, device=device, generator=generator)
        left = (n[:, None] - torch.arange(kk, device=device)[None]).double()
        exponents = torch.where(left > 0, 1.0 / left.clamp_min(1.0), 0.0)
        steps = u.log() * exponents
        first = m * torch.exp(steps[:, 0])
        sigma = -torch.log1p(-first)
        # which positions: uniform without replacement among the masked ones
        keys = torch.rand(rows.numel(), length, dtype=torch.float64, device=device, generator=generator)
        keys = torch.where(masked[rows], keys, -1.0)
        top = keys.topk(kk, dim=1)
        idx, valid = top.indices, top.values >= 0
        xr = x[rows]
        log_score = log_scores_at(model, xr, sigma.float(), idx)[..., :n_real]
        if categorical == "reference":
            tokens = sample_categorical_reference(torch.exp(log_score - log_score.amax(-1, keepdim=True)), generator)
        else:
            log_score = log_score.double()
            tokens = sample_categorical(torch.exp(log_score - log_score.amax(-1, keepdim=True)), generator)
        xr = xr.scatter(1, idx, torch.where(valid, tokens, xr.gather(1, idx)))
        x[rows] = xr
        masked[rows] = xr == mask_id
        n_masked[rows] = n - valid.sum(1)
        mask_prob[rows] = m * torch.exp(steps.sum(1))
        nfe += 1

    wall = clock.stop()
    n_fixed = 0 if fixed is None else int(fixed.sum())
    return SampleOutput(
        samples=x, nfe=nfe, tokens=batch_size * length - n_fixed, wall_time=wall,
        sampler="fhs" if k == 1 else f"fhs-k{k}", steps=None,
        lengths=eos_lengths(x, eos_id, fixed) if trim_eos else None, extra=dict(tokens_per_call=k, categorical=categorical),
    )
