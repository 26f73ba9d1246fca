"""Noise schedules: t in [0, 1] -> total noise sigma(t) and its rate sigma'(t).

Both are computed in float64 and cast back to t's dtype: near t = 1 the log-linear schedule cancels badly in
float32 (sigma(1) is off by 1.3e-5 relative), and these are [B]-sized tensors, so the cost is nil.
"""
from __future__ import annotations

import math

import torch

from .config import NoiseConfig
from .errors import UserError


def _as_float_tensor(t) -> torch.Tensor:
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if not torch.compiler.is_compiling() and t.numel() and bool(((t < 0) | (t > 1) | t.isnan()).any()):
        raise UserError(f"diffusion time t must lie in [0, 1]; got values in [{t.min().item()}, {t.max().item()}]")
    return t


class Noise:
    """Base class: subclasses give total_noise and rate_noise on float64 input."""

    def _total(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _rate(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def total_noise(self, t) -> torch.Tensor:
        t = _as_float_tensor(t)
        return self._total(t.double()).to(t.dtype)

    def rate_noise(self, t) -> torch.Tensor:
        t = _as_float_tensor(t)
        return self._rate(t.double()).to(t.dtype)

    def __call__(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (sigma(t), sigma'(t)) with t's shape and dtype."""
        t = _as_float_tensor(t)
        t64 = t.double()
        return self._total(t64).to(t.dtype), self._rate(t64).to(t.dtype)

    def in_dtype(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma(t), sigma'(t)) computed in t's own dtype with the official code's operations, and no range check
        (its float32 grid steps a hair below t = 0): what categorical="reference" uses to reproduce its time grid."""
        return self._total(t), self._rate(t)


class LogLinear(Noise):
    """sigma(t) = -log(1 - (1 - eps) t): the masking probability 1 - e^{-sigma} = (1 - eps) t is linear in t.

    eps = 1e-3 is hard-coded in the reference code (the config's sigma_min/max do not reach this schedule).
    """

    def __init__(self, eps: float = 1e-3):
        if not 0.0 < eps < 1.0:
            raise UserError(f"LogLinear eps must be in (0, 1), got {eps} (eps = 0 makes sigma(1) infinite)")
        self.eps = eps

    def _total(self, t):
        return -torch.log1p(-(1 - self.eps) * t)

    def _rate(self, t):
        return (1 - self.eps) / (1 - (1 - self.eps) * t)

    def __repr__(self) -> str:
        return f"LogLinear(eps={self.eps})"


class Geometric(Noise):
    """sigma(t) = sigma_min^(1-t) * sigma_max^t, used with the uniform graph."""

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        if not 0.0 < sigma_min < sigma_max:
            raise UserError(f"Geometric needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.log_ratio = math.log(self.sigma_max) - math.log(self.sigma_min)

    def _total(self, t):
        return self.sigma_min ** (1 - t) * self.sigma_max**t

    def _rate(self, t):
        return self._total(t) * self.log_ratio

    def in_dtype(self, t):
        # the official schedule keeps sigma_min and sigma_max in a float32 tensor (torch's default dtype)
        s = torch.tensor([self.sigma_min, self.sigma_max], device=t.device)
        total = s[0] ** (1 - t) * s[1] ** t
        return total, total * (s[1].log() - s[0].log())

    def __repr__(self) -> str:
        return f"Geometric(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


def get_noise(config: NoiseConfig) -> Noise:
    if config.type == "loglinear":
        return LogLinear()
    if config.type == "geometric":
        return Geometric(config.sigma_min, config.sigma_max)
    raise UserError(f"unknown noise type {config.type!r}")
