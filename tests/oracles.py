"""Models whose log-scores are known exactly, so samplers and likelihood bounds can be checked against the truth."""
import math

import torch
import torch.nn as nn

NEG = -1e4  # log of a zero ratio (exp underflows to 0; finite so that no inf * 0 appears)


def esigm1(sigma):
    return torch.expm1(sigma)


class FactorisedAbsorbOracle(nn.Module):
    """Exact log-score of the absorbing diffusion of a factorised distribution p [L, N] (float64).

    Masked position l: log p_l(j) - log(e^sigma - 1) for j < N, 0 at MASK. Unmasked token i: 0 at i,
    log(e^sigma - 1) - log p_l(i) at MASK, a zero ratio elsewhere. The sigma dependence is exactly scale_by_sigma's,
    so the network part ignores sigma: time_independent.

    It has SEDD's row-subset interface too (`hidden_states` + `head`, the hidden state being the position), so the
    samplers take the path `pysedd sample` takes with a SEDD on CPU: only the masked rows are projected and stepped.
    `forward_only(oracle)` hides that interface (full [B, L, V] outputs: the compiled kernel's path for float32)."""

    time_independent = True
    scale_by_sigma = True

    def __init__(self, p: torch.Tensor, dtype=torch.float64):
        super().__init__()
        self.register_buffer("logp", p.double().log())
        self.n_tokens, self.dtype = p.shape[1], dtype
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.head_rows = 0  # rows projected through `head`

    def log_scores(self, pos: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Log-scores [R, K, N + 1] at positions pos [R, K] holding tokens x [R, K], sigma [R]."""
        N = M = self.n_tokens
        log_e = torch.log(esigm1(sigma.double()))[:, None, None]  # [R, 1, 1]
        logp = self.logp[pos]  # [R, K, N]
        out = torch.full((*x.shape, N + 1), NEG, dtype=torch.float64, device=x.device)
        out[..., :N] = torch.where((x == M)[..., None], logp - log_e, NEG)
        p_self = logp.gather(-1, x.clamp_max(N - 1)[..., None]).squeeze(-1)
        out[..., M] = torch.where(x == M, 0.0, log_e[..., 0] - p_self)
        return out.scatter(-1, x[..., None], 0.0).to(self.dtype)

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[1], device=x.device).expand(x.shape)

    def forward(self, x, sigma):
        self.calls.append((x.clone(), sigma.clone()))
        return self.log_scores(self.positions(x), x, sigma.reshape(-1).expand(x.shape[0]))

    def hidden_states(self, x, sigma):
        self.calls.append((x.clone(), sigma.clone()))
        return self.positions(x)[..., None].double()  # [B, L, 1]: all the head needs is where the row is

    def head(self, h, x, sigma):
        self.head_rows += x.numel()
        sigma = torch.as_tensor(sigma, device=x.device).reshape(-1).expand(x.shape[0])
        return self.log_scores(h[..., 0].long(), x, sigma)


class _ForwardOnly(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.time_independent, self.scale_by_sigma = model.time_independent, model.scale_by_sigma

    @property
    def calls(self):
        return self.model.calls

    def forward(self, x, sigma):
        return self.model(x, sigma)


def forward_only(model: nn.Module) -> nn.Module:
    """The same oracle with only `forward` (full [B, L, V] outputs)."""
    return _ForwardOnly(model)


class TimeConditionedAbsorbOracle(FactorisedAbsorbOracle):
    """The same exact scores, but declared sigma-conditioned: samplers must evaluate it at each step's sigma."""

    time_independent = False


class FactorisedUniformOracle(nn.Module):
    """Exact log-score of the uniform diffusion of a factorised p [L, N]: log p_sigma(y) - log p_sigma(x) with
    p_sigma = e^-sigma p + (1 - e^-sigma) / N per position."""

    scale_by_sigma = False

    def __init__(self, p: torch.Tensor):
        super().__init__()
        self.register_buffer("p", p.double())
        self.calls = []

    def forward(self, x, sigma):
        self.calls.append((x.clone(), sigma.clone()))
        B, L = x.shape
        N = self.p.shape[1]
        a = torch.exp(-sigma.double())[:, None, None]
        log_pt = torch.log(a * self.p[:L][None] + (1 - a) / N)  # [B, L, N]
        return log_pt - log_pt.gather(-1, x[..., None])


class PairDenoiserAbsorb(nn.Module):
    """A context-dependent time-independent denoiser on L = 2 (scale_by_sigma form): a masked position l predicts
    marg[l] when the other position is masked and cond[l, v] when the other holds v. Its own likelihood is the
    any-order mixture p(x) = 1/2 [marg0(x0) cond1[x0](x1) + marg1(x1) cond0[x1](x0)]."""

    time_independent = True
    scale_by_sigma = True

    def __init__(self, marg: torch.Tensor, cond: torch.Tensor):
        super().__init__()
        self.register_buffer("log_marg", marg.double().log())  # [2, N]
        self.register_buffer("log_cond", cond.double().log())  # [2, N, N]: cond[l, v] = p(x_l | other = v)
        self.n_tokens = marg.shape[1]

    def forward(self, x, sigma):
        B, L = x.shape
        N = M = self.n_tokens
        assert L == 2
        log_e = torch.log(esigm1(sigma.double()))[:, None, None]
        other = x.flip(1)  # [B, 2]: the other position's token
        pred = torch.stack([
            torch.where((other[:, l] == M)[:, None], self.log_marg[l][None],
                        self.log_cond[l][other[:, l].clamp_max(N - 1)]) for l in range(2)], 1)  # [B, 2, N]
        out = torch.full((B, L, N + 1), NEG, dtype=torch.float64)
        out[..., :N] = torch.where((x == M)[..., None], pred - log_e, NEG)
        return out.scatter(-1, x[..., None], 0.0)

    def nll(self, x0: list[int]) -> float:
        a, b = x0
        p = 0.5 * (self.log_marg[0, a] + self.log_cond[1, a, b]).exp() + 0.5 * (self.log_marg[1, b] + self.log_cond[0, b, a]).exp()
        return -math.log(float(p))


def random_factorised(L: int, N: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(1.5 * torch.randn(L, N, generator=g, dtype=torch.float64), -1)


def binned_chisquare_pvalue(counts, p, n, min_expected=20.0):
    """Chi-square p-value of counts against n * p, with the cells expecting fewer than min_expected merged."""
    from scipy.stats import chisquare

    expected = p * n
    big = expected >= min_expected
    cells = torch.cat([counts[big], counts[~big].sum()[None]])
    want = torch.cat([expected[big], expected[~big].sum()[None]])
    return chisquare(cells.numpy(), want.numpy()).pvalue


def realistic_step_case(absorb: bool, predictor: str, V: int = 1537):
    """One reverse step at a realistic vocabulary: log-scores s [1, 1, V] with a Zipf-like head and a long tail, the
    state x [1, 1], coef [1] (float64), the exact law p of the next token (the weights of the PyTorch statement,
    normalised) and N, the number of real tokens. About half the Euler draws move."""
    from pysedd.ops import reference as R

    N = V - 1 if absorb else V
    g = torch.Generator().manual_seed(12)
    s = (-0.7 * torch.log(torch.arange(1, V + 1, dtype=torch.float64))
         + 0.3 * torch.randn(V, generator=g, dtype=torch.float64)).float()
    x = torch.tensor([[N if absorb else 3]])
    s[x[0, 0]] = 0.0
    total = s[:N].double().exp().sum().item()
    if predictor == "euler":
        coef = 0.5 / total if absorb else 0.5 * V / total
    else:
        coef = math.log1p(0.5 / total) if absorb else 8.0
    coef = torch.tensor([coef], dtype=torch.float64)
    s = s[None, None]
    p = R.reverse_weights(s.double(), x, coef, predictor, absorb)[0, 0].clamp_min(0)
    return s, x, coef, p / p.sum(), N
