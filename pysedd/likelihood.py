"""The SEDD likelihood bound: NELBO(x0) = int_0^1 sum_l sigma'(t) E_{x_t}[score entropy_l] dt
(docs/sedd.md#elbo), estimated with K draws of t per sequence, and perplexity in both aggregation orders.

Conventions (pinned, recorded in every result):
* t is drawn on [sampling_eps, 1] (the training clip, eps_s = 1e-3) and the K terms are averaged, as the reference code
  and the training loss do; the t = 1 boundary term and the [0, eps_s] sliver are ignored, as everywhere else.
* stratified=True: t_k = eps_s + (1 - eps_s)(u_k + k)/K with an independent u_k per stratum; the standard error is
  the collapsed-strata estimate sqrt(sum over stratum pairs (y_a - y_b)^2) / K, which is conservative. Monte Carlo:
  iid t, standard error std / sqrt(K).
* All randomness (t and the masking) is drawn on the CPU from a generator per sequence, so a sequence's estimate does
  not depend on the batch it is in, on batch_size, or on the device. Per-position score entropies come from the
  model's dtype (float32 at least), all sums over positions and t are float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .errors import UserError
from .graph import Graph
from .noise import Noise


@dataclass
class NelboResult:
    nelbo: torch.Tensor  # [B] float64, nats per sequence (upper bound on -log p(x0))
    stderr: torch.Tensor  # [B] float64, standard error of each estimate over the t draws
    n_tokens: torch.Tensor  # [B] int64, scored tokens per sequence
    settings: dict = field(default_factory=dict)  # n_samples, stratified, seed, sampling_eps

    @property
    def per_token(self) -> torch.Tensor:
        return self.nelbo / self.n_tokens


def _generator(seed: int, key: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(key)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _draw_t(n_samples: int, stratified: bool, sampling_eps: float, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(n_samples, dtype=torch.float64, generator=generator)
    if stratified:
        u = (u + torch.arange(n_samples, dtype=torch.float64)) / n_samples
    return sampling_eps + (1.0 - sampling_eps) * u


def _stderr(y: torch.Tensor, stratified: bool) -> torch.Tensor:
    """Standard error of the mean of y [B, K] along K."""
    K = y.shape[1]
    if K < 2:
        return torch.full(y.shape[:1], math.nan, dtype=torch.float64)
    if not stratified:
        return y.std(1, unbiased=True) / math.sqrt(K)
    pairs = K // 2
    sq = (y[:, 0 : 2 * pairs : 2] - y[:, 1 : 2 * pairs : 2]).pow(2).sum(1)
    if K % 2:  # the odd stratum out borrows half of its neighbour's pair difference
        sq = sq + (y[:, -1] - y[:, -2]).pow(2) / 2
    return sq.sqrt() / K


def _check_settings(n_samples, sampling_eps, batch_size):
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise UserError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not 0.0 <= sampling_eps < 1.0:
        raise UserError(f"sampling_eps must lie in [0, 1), got {sampling_eps}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")


def _model_device(model) -> torch.device:
    param = next(iter(model.parameters()), None)
    if param is None:
        param = next(iter(model.buffers()), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def _weighted_dse(model, graph: Graph, x_t: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, dsigma: torch.Tensor,
                  scored: torch.Tensor, batch_size: int) -> torch.Tensor:
    """sum over scored positions of sigma' * score entropy, for each row of x_t [R, L] (float64 [R])."""
    device = _model_device(model)
    out = torch.empty(x_t.shape[0], dtype=torch.float64)
    for start in range(0, x_t.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        xt, xc, sig = x_t[sl].to(device), x0[sl].to(device), sigma[sl].to(device)
        log_score = model(xt, sig.float())
        ell = graph.score_entropy(log_score, sig.to(torch.float32 if log_score.dtype != torch.float64 else torch.float64), xt, xc)
        ell = ell.double() * scored[sl].to(device)
        out[sl] = (dsigma[sl].to(device)[:, None] * ell).sum(1).cpu()
    return out


def _check_ids(graph: Graph, ids: torch.Tensor, name: str) -> None:
    if ids.numel() and bool(((ids < 0) | (ids >= graph.n_tokens)).any()):
        raise UserError(f"{name} holds ids outside the vocabulary [0, {graph.n_tokens}): min {ids.min().item()}, max {ids.max().item()}")


def _estimate(model, graph, noise, seqs: torch.Tensor, scored: torch.Tensor, keys: Sequence[int], *, n_samples: int,
              stratified: bool, seed: int, sampling_eps: float, batch_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """NELBO estimates and standard errors for sequences [B, L] (CPU) whose `scored` [B, L] positions are diffused.
    Sequences go through in groups of about batch_size / K, so memory stays bounded whatever B is."""
    B, L = seqs.shape
    K = n_samples
    rows_per_call = batch_size or K
    group = max(1, -(-rows_per_call // K))  # whole sequences per group; forward passes of rows_per_call rows
    y = torch.empty(B, K, dtype=torch.float64)
    for start in range(0, B, group):
        idx = range(start, min(B, start + group))
        x_t, ts = [], []
        for b in idx:
            gen = _generator(seed, keys[b])
            t = _draw_t(K, stratified, sampling_eps, gen)
            # only scored positions are diffused (the context stays clean), and their random numbers are drawn in
            # target order: requests with one key and equal-length targets share masks whatever their contexts
            noisy = seqs[b].repeat(K, 1)
            n = int(scored[b].sum())
            target = seqs[b][scored[b]].expand(K, n)
            noisy[:, scored[b]] = graph.sample_transition(target, noise.total_noise(t), generator=gen)
            x_t.append(noisy)
            ts.append(t)
        sigma, dsigma = noise(torch.cat(ts))
        sel = torch.tensor(list(idx))
        y[sel] = _weighted_dse(model, graph, torch.cat(x_t), seqs[sel].repeat_interleave(K, 0), sigma, dsigma,
                               scored[sel].repeat_interleave(K, 0), rows_per_call).reshape(len(idx), K)
    return y.mean(1), _stderr(y, stratified)


def sequence_nelbo(model, graph: Graph | None, noise: Noise | None, x0: torch.Tensor, *, n_samples: int = 128,
                   stratified: bool = True, seed: int = 0, sampling_eps: float = 1e-3,
                   batch_size: int | None = None) -> NelboResult:
    """Per-sequence NELBO [B] in nats of every token of x0 [B, L], with its standard error over the K = n_samples
    t draws. Sequence b's randomness comes from (seed, b). batch_size: rows per network call (default K)."""
    if graph is None or noise is None:  # None: the model's own (model.config)
        graph, noise = model.graph_and_noise(graph, noise)
    _check_settings(n_samples, sampling_eps, batch_size)
    if not isinstance(x0, torch.Tensor) or x0.dim() != 2 or x0.dtype not in (torch.int64, torch.int32):
        raise UserError(f"x0 must be a [batch, length] integer tensor, got {getattr(x0, 'shape', type(x0))}")
    x0 = x0.long().cpu()
    _check_ids(graph, x0, "x0")
    model.eval()
    scored = torch.ones_like(x0, dtype=torch.bool)
    nelbo, stderr = _estimate(model, graph, noise, x0, scored, range(x0.shape[0]), n_samples=n_samples,
                              stratified=stratified, seed=seed, sampling_eps=sampling_eps, batch_size=batch_size)
    return NelboResult(nelbo, stderr, torch.full((x0.shape[0],), x0.shape[1], dtype=torch.int64),
                       dict(n_samples=n_samples, stratified=stratified, seed=seed, sampling_eps=sampling_eps))


def conditional_nelbo(model, graph: Graph, noise: Noise, context_ids: Sequence[Sequence[int]],
                      target_ids: Sequence[Sequence[int]], *, n_samples: int = 256, seed: int = 0,
                      stratified: bool = True, sampling_eps: float = 1e-3, batch_size: int | None = None,
                      with_stderr: bool = False, keys: Sequence[int] | None = None) -> list[float] | list[tuple[float, float]]:
    """NELBO in nats of each target given its context (sequence = context ++ target): context positions stay clean
    and are never scored, only target positions are diffused, and the model sees the true sigma(t).

    Request i draws its randomness from (seed, keys[i]) (default: one key for all). Requests with the same key share
    their t draws and, when their targets have the same length, the masks of every target position, whatever their
    contexts: common random numbers, so the difference between the choices of one question is far less noisy than
    either number. Requests are batched only with requests of the same total length, so no padding ever enters the
    model, and a number never depends on the batch it was computed in."""
    _check_settings(n_samples, sampling_eps, batch_size)
    if len(context_ids) != len(target_ids):
        raise UserError(f"{len(context_ids)} contexts but {len(target_ids)} targets")
    keys = [0] * len(target_ids) if keys is None else list(keys)
    if len(keys) != len(target_ids):
        raise UserError(f"{len(keys)} keys for {len(target_ids)} requests")
    model.eval()
    by_length: dict[int, list[int]] = {}
    for i, (ctx, tgt) in enumerate(zip(context_ids, target_ids)):
        if len(tgt) == 0:
            raise UserError(f"request {i} has an empty target")
        by_length.setdefault(len(ctx) + len(tgt), []).append(i)
    results: list = [None] * len(target_ids)
    for length, idx in by_length.items():
        seqs = torch.tensor([list(context_ids[i]) + list(target_ids[i]) for i in idx], dtype=torch.int64)
        _check_ids(graph, seqs, "context/target")
        scored = torch.tensor([[False] * len(context_ids[i]) + [True] * len(target_ids[i]) for i in idx])
        nelbo, stderr = _estimate(model, graph, noise, seqs, scored, [keys[i] for i in idx], n_samples=n_samples,
                                  stratified=stratified, seed=seed, sampling_eps=sampling_eps, batch_size=batch_size)
        for j, i in enumerate(idx):
            results[i] = (float(nelbo[j]), float(stderr[j])) if with_stderr else float(nelbo[j])
    return results


def perplexity(nll_sums, n_tokens) -> dict:
    """Dataset perplexity from per-sequence (or per-chunk) NLL sums in nats and token counts, in both orders:
    mean_then_exp = exp(sum NLL / sum n) (token-weighted; this paper, MDLM; the primary number) and
    exp_then_mean = mean_c exp(NLL_c / n_c) (the original SEDD paper; >= the former by Jensen, and inflated by MC noise)."""
    nll = np.asarray(torch.as_tensor(nll_sums).double().cpu(), dtype=np.float64).reshape(-1)
    n = np.asarray(torch.as_tensor(n_tokens).double().cpu(), dtype=np.float64).reshape(-1)
    if nll.shape != n.shape or nll.size == 0:
        raise UserError(f"need as many NLL sums as token counts (and at least one), got {nll.size} and {n.size}")
    if (n <= 0).any() or not np.isfinite(nll).all():
        raise UserError("token counts must be positive and NLL sums finite")
    return dict(
        primary="mean_then_exp",
        mean_then_exp=float(np.exp(nll.sum() / n.sum())),
        exp_then_mean=float(np.mean(np.exp(nll / n))),
        nll_per_token=float(nll.sum() / n.sum()),
        n_tokens=int(n.sum()),
        n_sequences=int(n.size),
    )
