"""Forward diffusion graphs over token ids: the absorbing (MASK) graph and the uniform graph.

Q[to, from] is the forward rate matrix. Every method takes token ids of any batch shape [...] and sigma broadcastable
to it ([B], [B, 1] or a scalar for ids of shape [B, L]); vectors over the vocabulary live in a trailing dimension.
Method names follow the reference implementation so its users find what they know.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ops
from .errors import UserError
from .ops.reference import esigm1  # noqa: F401  (re-exported: users of the reference's graph_lib look here)


def _sigma_like(sigma, x: torch.Tensor) -> torch.Tensor:
    """Reshape sigma ([B], [B, 1], [B, L] or scalar) so that it broadcasts against ids x of shape [B, ...]."""
    sigma = torch.as_tensor(sigma, device=x.device)
    if not sigma.is_floating_point():
        sigma = sigma.to(torch.get_default_dtype())
    if not torch.compiler.is_compiling() and bool((sigma < 0).any()):
        raise UserError(f"sigma must be >= 0, got min {sigma.min().item()}")
    if sigma.dim() == 0 or sigma.shape == x.shape:
        return sigma
    if sigma.dim() == 1 and x.dim() >= 1 and sigma.shape[0] == x.shape[0]:
        return sigma.reshape(-1, *([1] * (x.dim() - 1)))
    if sigma.dim() == x.dim() and all(s in (1, n) for s, n in zip(sigma.shape, x.shape)):
        return sigma
    raise UserError(f"sigma of shape {tuple(sigma.shape)} does not broadcast against token ids of shape {tuple(x.shape)}")


class Graph:
    dim: int
    absorb: bool

    def check_ids(self, x: torch.Tensor, name: str = "x") -> None:
        if x.dtype not in (torch.int64, torch.int32):
            raise UserError(f"{name} must hold integer token ids, got dtype {x.dtype}")
        if not torch.compiler.is_compiling() and x.numel() and bool(((x < 0) | (x >= self.dim)).any()):
            raise UserError(f"{name} holds token ids outside [0, {self.dim}): min {x.min().item()}, max {x.max().item()}")

    def reverse_rate(self, x: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Reverse rate out of state x given the score (ratio) vector: R = transp_rate(x) * score, R[x] = -sum of the rest."""
        rate = self.transp_rate(x, dtype=score.dtype) * score
        rate = rate.scatter(-1, x[..., None], 0.0)
        return rate.scatter(-1, x[..., None], -rate.sum(-1, keepdim=True))

    def score_entropy(self, log_score: torch.Tensor, sigma, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Per-position score entropy [B, L] of log-scores [B, L, V] at noisy tokens x given clean x0, with the
        reference's signature; sigma [B], [B, 1] or a scalar. It goes through `pysedd.ops.score_entropy`, the loss's
        dispatcher (the compiled kernel when there is one, else `pysedd.ops.reference.score_entropy`)."""
        self.check_ids(x, "x")
        self.check_ids(x0, "x0")
        sigma = _sigma_like(sigma, x)
        if sigma.numel() not in (1, x.shape[0]) or (sigma.dim() > 1 and sigma.shape[1:].numel() != 1):
            raise UserError(f"score_entropy needs one sigma per sequence, got shape {tuple(sigma.shape)}")
        return ops.score_entropy(self, log_score, sigma.reshape(-1).expand(x.shape[0]), x, x0)


class Absorbing(Graph):
    """Each token jumps to MASK (id `dim - 1` = n_tokens) at rate 1; MASK is absorbing."""

    absorb = True

    def __init__(self, n_tokens: int):
        if n_tokens < 1:
            raise UserError(f"Absorbing graph needs n_tokens >= 1, got {n_tokens}")
        self.n_tokens = n_tokens
        self.dim = n_tokens + 1
        self.mask_index = n_tokens

    def __repr__(self) -> str:
        return f"Absorbing(n_tokens={self.n_tokens})"

    def rate(self, i: torch.Tensor) -> torch.Tensor:
        """Column i of Q: +1 at MASK, -1 at i (zero for i = MASK)."""
        return F.one_hot(torch.full_like(i, self.mask_index), self.dim) - F.one_hot(i, self.dim)

    def transp_rate(self, i: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Row i of Q: 1 on every non-mask entry for i = MASK, -onehot(i) otherwise (integer unless dtype is given)."""
        edge = -F.one_hot(i, self.dim)
        edge[i == self.mask_index] += 1
        return edge if dtype is None else edge.to(dtype)

    def transition(self, i: torch.Tensor, sigma) -> torch.Tensor:
        """Column i of exp(sigma Q): stay at i with prob e^-sigma, else MASK (a MASK row stays MASK)."""
        stay = torch.exp(-_sigma_like(sigma, i)[..., None])
        out = stay * F.one_hot(i, self.dim)
        out[..., self.mask_index] += (1 - stay)[..., 0]
        return out

    def transp_transition(self, i: torch.Tensor, sigma) -> torch.Tensor:
        """Row i of exp(sigma Q): for i = MASK, 1 - e^-sigma on every token and 1 at MASK; otherwise e^-sigma at i."""
        sigma = _sigma_like(sigma, i)[..., None]
        edge = torch.exp(-sigma) * F.one_hot(i, self.dim)
        return edge + torch.where(i[..., None] == self.mask_index, 1 - torch.exp(-sigma), 0.0)

    def sample_transition(self, i: torch.Tensor, sigma, generator=None) -> torch.Tensor:
        sigma = _sigma_like(sigma, i)
        move = torch.rand(i.shape, device=i.device, generator=generator) < -torch.expm1(-sigma)
        return torch.where(move, self.mask_index, i)

    def sample_limit(self, *batch_dims: int, device=None) -> torch.Tensor:
        return torch.full(batch_dims, self.mask_index, dtype=torch.int64, device=device)

    def staggered_score(self, score: torch.Tensor, dsigma) -> torch.Tensor:
        """exp(-dsigma Q) score: scale by e^dsigma, and give MASK (1 - e^dsigma) times the sum of the original score."""
        dsigma = _sigma_like(dsigma, score[..., 0])
        extra = -torch.expm1(dsigma) * score.sum(-1)
        out = score * torch.exp(dsigma)[..., None]
        out[..., self.mask_index] += extra
        return out

class Uniform(Graph):
    """Each token jumps to a uniformly drawn token (itself included) at rate 1: Q = 11^T / N - I."""

    absorb = False

    def __init__(self, n_tokens: int):
        if n_tokens < 2:
            raise UserError(f"Uniform graph needs n_tokens >= 2, got {n_tokens}")
        self.n_tokens = n_tokens
        self.dim = n_tokens

    def __repr__(self) -> str:
        return f"Uniform(n_tokens={self.n_tokens})"

    def rate(self, i: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        edge = torch.full((*i.shape, self.dim), 1.0 / self.dim, dtype=dtype, device=i.device)
        return edge.scatter(-1, i[..., None], -(self.dim - 1) / self.dim)

    def transp_rate(self, i: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.rate(i, dtype)

    def transition(self, i: torch.Tensor, sigma) -> torch.Tensor:
        """Column i of exp(sigma Q): (1 - e^-sigma)/N off i, the rest at i."""
        sigma = _sigma_like(sigma, i)[..., None]
        move = -torch.expm1(-sigma) / self.dim
        trans = move.expand(*i.shape, self.dim).clone()
        return trans.scatter(-1, i[..., None], (1 - (self.dim - 1) * move).expand(*i.shape, 1))

    def transp_transition(self, i: torch.Tensor, sigma) -> torch.Tensor:
        return self.transition(i, sigma)

    def sample_transition(self, i: torch.Tensor, sigma, generator=None) -> torch.Tensor:
        sigma = _sigma_like(sigma, i)
        move = torch.rand(i.shape, device=i.device, generator=generator) < -torch.expm1(-sigma)
        draw = torch.randint(0, self.dim, i.shape, device=i.device, generator=generator)
        return torch.where(move, draw, i)

    def sample_limit(self, *batch_dims: int, device=None, generator=None) -> torch.Tensor:
        return torch.randint(0, self.dim, batch_dims, device=device, generator=generator)

    def staggered_score(self, score: torch.Tensor, dsigma) -> torch.Tensor:
        """exp(-dsigma Q) score = score / a + (a - 1)/(N a) * sum(score), with a = e^-dsigma."""
        dsigma = _sigma_like(dsigma, score[..., 0])[..., None]
        a = torch.exp(-dsigma)
        return score / a + (torch.expm1(-dsigma) / (self.dim * a)) * score.sum(-1, keepdim=True)

def get_graph(graph_type: str, n_tokens: int) -> Graph:
    if graph_type == "absorb":
        return Absorbing(n_tokens)
    if graph_type == "uniform":
        return Uniform(n_tokens)
    raise UserError(f"unknown graph type {graph_type!r}; choose 'absorb' or 'uniform'")
