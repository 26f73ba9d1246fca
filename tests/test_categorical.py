"""categorical="reference" against an independent transcription of the official SEDD sampler (its graph, noise and
catsample operations, rewritten here line by line from reading that code), id for id under the same seed; and the
two categorical draws against exact laws: float64 matches them, the official float32 draw is truncated."""
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from oracles import FactorisedAbsorbOracle, FactorisedUniformOracle, random_factorised
from pysedd.config import SEDDConfig
from pysedd.errors import UserError
from pysedd.graph import Absorbing, Uniform
from pysedd.model import SEDD
from pysedd.noise import Geometric, LogLinear
from pysedd.ops.categorical import sample_categorical, sample_categorical_reference
from pysedd.sampling import Conditioning, fhs_sample, pc_sample

SIGMA_MIN, SIGMA_MAX = 1e-4, 20.0


# ---------------------------------------------------------------- the official sampler, transcribed


def official_noise(absorb):
    """(sigma, sigma') as the official LogLinearNoise (eps 1e-3) / GeometricNoise compute them: in t's float32."""
    if absorb:
        return lambda t: (-torch.log1p(-(1 - 1e-3) * t), (1 - 1e-3) / (1 - (1 - 1e-3) * t))
    sig = 1.0 * torch.tensor([SIGMA_MIN, SIGMA_MAX])

    def geometric(t):
        total = sig[0] ** (1 - t) * sig[1] ** t
        return total, sig[0] ** (1 - t) * sig[1] ** t * (sig[1].log() - sig[0].log())

    return geometric


class OfficialGraph:
    """The official Absorbing / Uniform graph methods the sampler calls (dim includes MASK for absorb)."""

    def __init__(self, absorb, dim):
        self.absorb, self.dim = absorb, dim

    def transp_rate(self, i):
        if self.absorb:
            edge = -F.one_hot(i, num_classes=self.dim)
            edge[i == self.dim - 1] += 1
            return edge
        edge = torch.ones(*i.shape, self.dim) / self.dim
        return edge.scatter(-1, i[..., None], -(self.dim - 1) / self.dim)

    def reverse_rate(self, i, score):
        rate = self.transp_rate(i) * score
        rate.scatter_(-1, i[..., None], torch.zeros_like(rate))
        rate.scatter_(-1, i[..., None], -rate.sum(dim=-1, keepdim=True))
        return rate

    def staggered_score(self, score, dsigma):
        if self.absorb:
            score = score.clone()
            extra = (1 - dsigma.exp()) * score.sum(dim=-1)
            score *= dsigma.exp()[:, None]
            score[..., -1] += extra
            return score
        epow = (-dsigma).exp()[..., None]
        return ((epow - 1) / (score.shape[-1] * epow)) * score.sum(dim=-1, keepdim=True) + score / epow

    def transp_transition(self, i, sigma):
        if self.absorb:
            sigma = sigma.view(*sigma.shape, *((1,) * (i.dim() + 1 - sigma.dim())))
            edge = (-sigma).exp() * F.one_hot(i, num_classes=self.dim)
            edge += torch.where(i == self.dim - 1, 1 - (-sigma).squeeze(-1).exp(), 0)[..., None]
            return edge
        trans = torch.ones(*i.shape, self.dim) * (1 - (-sigma[..., None]).exp()) / self.dim
        trans = trans.scatter(-1, i[..., None], torch.zeros_like(trans))
        return trans.scatter(-1, i[..., None], 1 - trans.sum(dim=-1, keepdim=True))

    def sample_limit(self, *dims):
        if self.absorb:
            return (self.dim - 1) * torch.ones(*dims, dtype=torch.int64)
        return torch.randint(0, self.dim, dims)


def official_gumbel(probs):
    gumbel_norm = 1e-10 - (torch.rand_like(probs) + 1e-10).log()
    return (probs / gumbel_norm).argmax(dim=-1)


def official_pc_sampler(model, absorb, dim, batch, length, predictor, steps, denoise=True, eps=1e-5, proj=None):
    """get_pc_sampler(...)(model) on CPU with the global RNG, then proj on the output as the conditional script does."""
    proj = proj or (lambda x: x)
    graph, noise = OfficialGraph(absorb, dim), official_noise(absorb)
    score_fn = lambda x, sigma: model(x, sigma.reshape(-1)).exp()  # noqa: E731
    x = graph.sample_limit(batch, length)
    timesteps = torch.linspace(1, eps, steps + 1)
    dt = (1 - eps) / steps
    for i in range(steps):
        t = timesteps[i] * torch.ones(x.shape[0], 1)
        x = proj(x)
        if predictor == "euler":
            sigma, dsigma = noise(t)
            rev_rate = dt * dsigma[..., None] * graph.reverse_rate(x, score_fn(x, sigma))
            x = official_gumbel(F.one_hot(x, num_classes=dim).to(rev_rate) + rev_rate)
        else:
            curr, nxt = noise(t)[0], noise(t - dt)[0]
            dsigma = curr - nxt
            probs = graph.staggered_score(score_fn(x, curr), dsigma) * graph.transp_transition(x, dsigma)
            x = official_gumbel(probs)
    if denoise:
        x = proj(x)
        sigma = noise(timesteps[-1] * torch.ones(x.shape[0], 1))[0]
        probs = graph.staggered_score(score_fn(x, sigma), sigma) * graph.transp_transition(x, sigma)
        x = official_gumbel(probs[..., :-1] if absorb else probs)
    return proj(x)


# ---------------------------------------------------------------- id for id


def tiny_sedd(graph, tokens=13, seed=0):
    torch.manual_seed(seed)
    cfg = SEDDConfig.preset("tiny", tokens=tokens, graph=graph, hidden_size=32, cond_dim=16, n_blocks=1, n_heads=4)
    model = SEDD(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights everywhere (the output layer is zero at init): a peaked, sigma-dependent net
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def pysedd_graph_noise(absorb, tokens):
    return (Absorbing(tokens), LogLinear()) if absorb else (Uniform(tokens), Geometric(SIGMA_MIN, SIGMA_MAX))


def conditioning_and_proj(length, tokens):
    positions, ids = [0, 1, length - 1], [2, tokens - 1, 5]

    def proj(x):
        x[:, positions] = torch.tensor(ids)
        return x

    return Conditioning(positions, ids), proj


@pytest.mark.parametrize("conditioned", [False, True])
@pytest.mark.parametrize("predictor", ["euler", "analytic"])
@pytest.mark.parametrize("absorb", [True, False])
@pytest.mark.parametrize("network", ["tiny-sedd", "oracle-float32", "oracle-float64"])
def test_reference_mode_reproduces_the_official_sampler_id_for_id(network, absorb, predictor, conditioned):
    tokens, batch, length, steps = 13, 6, 10, 12
    if network == "tiny-sedd":
        model = tiny_sedd("absorb" if absorb else "uniform", tokens)
    else:
        p = random_factorised(length, tokens, seed=7)
        dtype = torch.float32 if network == "oracle-float32" else torch.float64
        model = FactorisedAbsorbOracle(p, dtype) if absorb else FactorisedUniformOracle(p).to(dtype)
    dim = tokens + 1 if absorb else tokens
    graph, noise = pysedd_graph_noise(absorb, tokens)
    cond, proj = conditioning_and_proj(length, tokens) if conditioned else (None, None)
    torch.manual_seed(123)
    want = official_pc_sampler(model, absorb, dim, batch, length, predictor, steps, proj=proj)
    got = pc_sample(model, graph, noise, batch, length, steps, predictor, seed=123, categorical="reference",
                    conditioning=cond)
    assert torch.equal(got.samples, want)
    assert got.nfe == steps + 1 and got.meta()["categorical"] == "reference"
    # the draws are not degenerate: the rows differ
    assert len({tuple(r) for r in want.tolist()}) > 1


@pytest.mark.parametrize("absorb", [True, False])
def test_reference_mode_consumes_the_global_generator_like_the_official_sampler(absorb):
    """Without seed or generator both draw from torch's global generator, the same numbers in the same order:
    the ids agree, and so does the next number the global generator gives."""
    tokens, batch, length, steps = 13, 3, 8, 5
    model = tiny_sedd("absorb" if absorb else "uniform", tokens)
    graph, noise = pysedd_graph_noise(absorb, tokens)
    torch.manual_seed(9)
    want = official_pc_sampler(model, absorb, graph.dim, batch, length, "analytic", steps)
    after_official = torch.rand(4)
    torch.manual_seed(9)
    got = pc_sample(model, graph, noise, batch, length, steps, "analytic", categorical="reference")
    assert torch.equal(got.samples, want) and torch.equal(torch.rand(4), after_official)


def test_reference_mode_settings_are_checked():
    model, (graph, noise) = tiny_sedd("absorb"), pysedd_graph_noise(True, 13)
    with pytest.raises(UserError, match="categorical"):
        pc_sample(model, graph, noise, 2, 4, 3, categorical="float32")
    with pytest.raises(UserError, match="cache"):
        pc_sample(model, graph, noise, 2, 4, 3, categorical="reference", cache="approximate")
    with pytest.raises(UserError, match="categorical"):
        fhs_sample(model, graph, noise, 2, 4, categorical="gumbel")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("predictor", ["euler", "analytic", "denoise"])
@pytest.mark.parametrize("absorb", [True, False])
def test_reference_weights_are_the_official_weights_bit_for_bit(absorb, predictor, dtype):
    """One step's weights from pysedd.ops.reference.reverse_weights(reference=True) equal the official graph
    operations' (same operations, same order, same dtypes), for a float32 time grid and any network dtype."""
    from pysedd.ops.reference import reverse_weights

    tokens, batch, length = 9, 3, 7
    dim = tokens + 1 if absorb else tokens
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, dim, (batch, length), generator=g)
    log_score = (torch.randn(batch, length, dim, generator=g) * 2).to(dtype).scatter(-1, x[..., None], 0.0)
    noise, graph = official_noise(absorb), OfficialGraph(absorb, dim)
    t, dt = torch.tensor([[0.93], [0.41], [0.07]]), 1 / 64
    score = log_score.exp()
    if predictor == "euler":
        sigma, rate = noise(t)
        rev = dt * rate[..., None] * graph.reverse_rate(x, score)
        want, coef = F.one_hot(x, num_classes=dim).to(rev) + rev, dt * rate
    else:
        coef = noise(t)[0] if predictor == "denoise" else noise(t)[0] - noise(t - dt)[0]
        want = graph.staggered_score(score, coef) * graph.transp_transition(x, coef)
        want = want[..., :-1] if absorb and predictor == "denoise" else want
    got = reverse_weights(log_score, x, coef, predictor, absorb, reference=True)
    assert got.dtype == want.dtype and torch.equal(got, want)


# ---------------------------------------------------------------- the two draws against exact laws


def test_reference_draw_truncates_small_weights_exact_law_by_enumeration():
    """The exact law of the official draw for weights [1, r], by enumerating every float32 uniform torch.rand can
    return (k 2^-24, k < 2^24, equally likely): the noise 1e-10 - log(U + 1e-10) takes these 2^24 values, and
    P(token 1) = sum over its noise e1 of P(e1) P(e0 > e1 / r). The correct law is r / (1 + r); the float32 race
    never draws r = 1e-9, draws 1e-8 at a few % of its rate and 1e-7 at about 3/4 of it."""
    u = (torch.arange(2**24, dtype=torch.float64) / 2**24).float()
    assert torch.equal(u.double() * 2**24, torch.arange(2**24, dtype=torch.float64))  # the grid is exact in float32
    noise = (1e-10 - (u + 1e-10).log()).double().sort().values

    def p_token1(r):
        e1 = noise[noise < r * noise[-1]]
        above = 2**24 - torch.searchsorted(noise, e1 / r, right=True)
        return above.double().sum().item() / 2**48

    assert noise[0].item() > 5.9e-8 and noise[-1].item() < 23.1  # the noise is bounded on both sides
    assert p_token1(1e-9) == 0.0
    assert p_token1(1e-8) < 0.05 * 1e-8
    assert 0.6 * 1e-7 < p_token1(1e-7) < 0.85 * 1e-7
    assert p_token1(1e-4) == pytest.approx(1e-4 / (1 + 1e-4), rel=1e-3)  # large ratios are unaffected


@pytest.mark.parametrize("draw", ["float64", "reference"])
def test_both_draws_match_moderate_laws_chi_square(draw):
    """Away from the float32 floor both draws follow w / sum(w) (V = 1024, a Zipf law over four decades)."""
    V, n = 1024, 20_000
    w = 1.0 / torch.arange(1, V + 1, dtype=torch.float64) ** 1.3
    sampler = sample_categorical if draw == "float64" else sample_categorical_reference
    weights = w.expand(n, V) if draw == "float64" else w.float().expand(n, V)
    counts = torch.bincount(sampler(weights, torch.Generator().manual_seed(3)), minlength=V).double()
    expected = w / w.sum() * n
    head = expected >= 20  # bin the tail so every cell expects >= 20
    cells = torch.cat([counts[head], counts[~head].sum()[None]])
    want = torch.cat([expected[head], expected[~head].sum()[None]])
    assert chisquare(cells.numpy(), want.numpy()).pvalue > 1e-3


def test_float64_is_the_default_and_is_recorded():
    p = random_factorised(3, 4, seed=1)
    out = pc_sample(FactorisedAbsorbOracle(p), Absorbing(4), LogLinear(), 4, 3, 5, seed=0)
    assert out.meta()["categorical"] == "float64"
    out = fhs_sample(FactorisedAbsorbOracle(p), Absorbing(4), LogLinear(), 4, 3, seed=0, categorical="reference")
    assert out.meta()["categorical"] == "reference" and (out.samples < 4).all()
