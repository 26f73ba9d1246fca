"""The categorical draw at the end of every reverse step, in two settings (docs/sampling.md, "Categorical draw").

* `sample_categorical` ("float64", the default): the exact law P(k) = w_k / sum(w). An exponential race
  argmax_k w_k / E_k with E_k = -log(1 - U_k) and U_k float64 uniforms; its tail reaches e^-36.7, far below any
  weight ratio that matters.
* `sample_categorical_reference` ("reference"): the official SEDD sampler's draw, argmax_k p_k / (1e-10 - log(U_k +
  1e-10)) with U_k uniforms in p's own dtype (float32 for a float32 network), one uniform per entry of the full
  tensor. In float32 U_k >= 2^-24 (or 0, clipped by the 1e-10), so E_k <= 16.6 or 23.0: the race is truncated,
  low-weight tokens are drawn less often than their weight says, and the samples are sharper than the model
  (lower generative perplexity and entropy), more so the more steps there are. This is what the paper measured.

Both draw from `generator` when one is given, else from torch's global generator.
"""
from __future__ import annotations

import torch

from pysedd.defaults import CATEGORICAL
from pysedd.errors import UserError


def check_categorical(categorical: str) -> str:
    if categorical not in CATEGORICAL:
        raise UserError(f"unknown categorical draw {categorical!r}; choose one of {', '.join(CATEGORICAL)}")
    return categorical


def sample_categorical(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """argmax_k w_k / E_k, E_k ~ Exp(1), in float64: P(k) = w_k / sum(w) for unnormalised w >= 0.

    Negative weights never win (a negative stay-weight of a too-large Euler step is thereby clipped to zero)."""
    u = torch.rand(weights.shape, dtype=torch.float64, device=weights.device, generator=generator)
    exp_noise = (-torch.log1p(-u)).clamp_min_(torch.finfo(torch.float64).tiny)
    return (weights.double() / exp_noise).argmax(dim=-1)


def sample_categorical_reference(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The official sampler's Gumbel-max, op for op: uniforms of probs' shape and dtype (what `rand_like` gives),
    then argmax(probs / (1e-10 - log(U + 1e-10)))."""
    u = torch.rand(probs.shape, dtype=probs.dtype, device=probs.device, generator=generator)
    return (probs / (1e-10 - (u + 1e-10).log())).argmax(dim=-1)
