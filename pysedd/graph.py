"""Forward diffusion graphs over token ids: the absorbing (MASK) graph and the uniform graph.

Q[to, from] is the forward rate matrix. Every method takes token ids of any batch shape [...] and sigma broadcastable
to it ([B], [B, 1] or a scalar for ids of shape [B, L]); vectors over the vocabulary live in a trailing dimension.
Method names follow the reference implementation so its users find what they know.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import UserError


def esigm1(sigma: torch.Tensor) -> torch.Tensor:
    """e^sigma - 1, through expm1 where it matters (sigma is about 1e-5 at the end of sampling)."""
    return torch.where(sigma < 0.5, torch.expm1(sigma), torch.exp(sigma) - 1)


def phi(u: torch.Tensor) -> torch.Tensor:
    """phi(u) = e^u - 1 - u >= 0: the score-entropy integrand in a form that does not cancel."""
    return torch.expm1(u) - u


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

    def sample_rate(self, x: torch.Tensor, rate: torch.Tensor, generator=None) -> torch.Tensor:
        from .sampling.weights import sample_categorical

        return sample_categorical(F.one_hot(x, self.dim).to(rate) + rate, generator=generator)


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

    def score_entropy(self, log_score: torch.Tensor, sigma, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Per-position score entropy [B, L]; only masked positions contribute.

        Stable form: sum_{j<N, j != x0} e^{s_j} + r * phi(s_{x0} - log r), with r = 1 / (e^sigma - 1).
        """
        s = log_score.float() if log_score.dtype in (torch.bfloat16, torch.float16) else log_score
        e = esigm1(_sigma_like(sigma, x).to(s.dtype)).expand(x.shape)
        masked = x == self.mask_index
        s_m, x0_m, e_m = s[masked], x0[masked], e[masked]
        exp_others = s_m[:, : self.n_tokens].exp().scatter(-1, x0_m[:, None], 0.0).sum(-1)
        log_r = -torch.log(e_m)
        s_x0 = s_m.gather(-1, x0_m[:, None]).squeeze(-1)
        out = torch.zeros(x.shape, dtype=s.dtype, device=s.device)
        return out.index_put((masked,), exp_others + torch.exp(log_r) * phi(s_x0 - log_r))


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

    def score_entropy(self, log_score: torch.Tensor, sigma, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Per-position score entropy [B, L] in the stable form (1/N) sum_{y != x} r_y phi(s_y - log r_y).

        r_y = e/(e + N) for every y when x = x0; otherwise r_{x0} = 1 + N/e and r_y = 1. The closed form of the
        reference cancels catastrophically at small sigma (NaN in float32 below 1e-3), this one does not.
        """
        s = log_score.float() if log_score.dtype in (torch.bfloat16, torch.float16) else log_score
        e = esigm1(_sigma_like(sigma, x).to(s.dtype)).expand(x.shape)[..., None]
        n = self.dim
        log_ratio = torch.log(e) - torch.log(e + n)  # x = x0: every y has r_y = e / (e + N)
        log_r0 = torch.log(e + n) - torch.log(e)  # x != x0: r_{x0} = 1 + N / e
        same = (x == x0)[..., None]
        log_r = torch.where(same, log_ratio, 0.0).expand(s.shape)
        log_r = log_r.scatter(-1, x0[..., None], torch.where(same, log_ratio, log_r0))
        terms = torch.exp(log_r) * phi(s - log_r)
        terms = terms.scatter(-1, x[..., None], 0.0)
        return terms.sum(-1) / n


def get_graph(graph_type: str, n_tokens: int) -> Graph:
    if graph_type == "absorb":
        return Absorbing(n_tokens)
    if graph_type == "uniform":
        return Uniform(n_tokens)
    raise UserError(f"unknown graph type {graph_type!r}; choose 'absorb' or 'uniform'")
