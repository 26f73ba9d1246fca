"""Reverse-step weights (pysedd.ops.reference.reverse_weights, the one statement of them) against the exact
posterior, and the float64 categorical draw."""
import math

import pytest
import torch
from scipy.stats import chisquare

from pysedd.graph import Absorbing, Uniform
from pysedd.noise import Geometric, LogLinear
from pysedd.ops.categorical import sample_categorical
from pysedd.ops.reference import reverse_weights


# the step coefficients of each predictor at time t with step dt, as the sampler forms them
def euler_probs(graph, noise, score, x, t, dt):
    return reverse_weights(score.log(), x, dt * noise.rate_noise(t), "euler", graph.absorb)


def analytic_probs(graph, noise, score, x, t, dt):
    coef = noise.total_noise(t) - noise.total_noise((t - dt).clamp_min(0.0))
    return reverse_weights(score.log(), x, coef, "analytic", graph.absorb)


def denoise_probs(graph, noise, score, x, t):
    return reverse_weights(score.log(), x, noise.total_noise(t), "denoise", graph.absorb)


def q_matrix(graph):
    n = graph.n_tokens
    if graph.absorb:
        Q = torch.zeros(n + 1, n + 1, dtype=torch.float64)
        Q[n, :n] = 1.0
        Q[range(n), range(n)] = -1.0
        return Q
    return torch.ones(n, n, dtype=torch.float64) / n - torch.eye(n, dtype=torch.float64)


def exact_scores(graph, p0, sigma):
    """Marginal p_sigma = expm(sigma Q) p0 and the true ratio vectors s[x, y] = p_sigma(y) / p_sigma(x)."""
    p_t = torch.linalg.matrix_exp(sigma * q_matrix(graph)) @ p0
    return p_t, p_t[None, :] / p_t[:, None]


@pytest.mark.parametrize("graph,noise", [(Absorbing(5), LogLinear()), (Uniform(5), Geometric()), (Uniform(5), LogLinear())])
def test_analytic_weights_are_the_exact_posterior(graph, noise):
    """With the true score, staggered_score * transp_transition = P(x_s = y | x_t = x), which sums to 1."""
    torch.manual_seed(0)
    p0 = torch.zeros(graph.dim, dtype=torch.float64)
    p0[: graph.n_tokens] = torch.softmax(torch.randn(graph.n_tokens, dtype=torch.float64), 0)
    t, dt = 0.6, 0.1
    sig_t, sig_s = noise.total_noise(torch.tensor(t, dtype=torch.float64)), noise.total_noise(torch.tensor(t - dt, dtype=torch.float64))
    p_t, ratios = exact_scores(graph, p0, sig_t)
    p_s = torch.linalg.matrix_exp(sig_s * q_matrix(graph)) @ p0
    forward = torch.linalg.matrix_exp((sig_t - sig_s) * q_matrix(graph))  # forward[x, y] = P(x_t = x | x_s = y)
    states = [x for x in range(graph.dim) if p_t[x] > 0]
    x = torch.tensor([states])
    w = analytic_probs(graph, noise, ratios[states][None], x, torch.tensor([t], dtype=torch.float64), dt)
    for i, xi in enumerate(states):
        posterior = p_s * forward[xi] / p_t[xi]
        torch.testing.assert_close(w[0, i], posterior, rtol=1e-9, atol=1e-12)
        assert w[0, i].sum().item() == pytest.approx(1.0, abs=1e-12)


def test_absorb_euler_equals_analytic_under_loglinear():
    """dt sigma'(t) = e^{sigma(t) - sigma(t - dt)} - 1 exactly: the two predictors give identical weights
    (docs/sedd.md#numerics)."""
    g, noise = Absorbing(7), LogLinear()
    torch.manual_seed(0)
    score = torch.rand(2, 6, 8, dtype=torch.float64) * 3
    x = torch.randint(0, 8, (2, 6))
    x[:, :3] = 7
    score.scatter_(-1, x[..., None], 1.0)  # the network zeroes its own-token log-score
    for t, dt in ((0.9, 0.05), (0.3, 0.01), (1e-3, 1e-4)):
        e = euler_probs(g, noise, score, x, torch.tensor([t, t], dtype=torch.float64), dt)
        a = analytic_probs(g, noise, score, x, torch.tensor([t, t], dtype=torch.float64), dt)
        torch.testing.assert_close(e, a, rtol=1e-9, atol=1e-12)
        assert torch.equal(e[x != 7], torch.nn.functional.one_hot(x[x != 7], 8).double())  # unmasked rows stay


def test_absorb_analytic_is_mdlm_ancestral_step():
    """I8: with s_j = p_j / e_sigma(t), P(j) = p_j (a_s - a_t) / (1 - a_t) and P(MASK) = (1 - a_s) / (1 - a_t)."""
    g, noise = Absorbing(6), LogLinear()
    torch.manual_seed(3)
    p = torch.softmax(torch.randn(6, dtype=torch.float64), 0)
    t, dt = 0.7, 0.2
    sig_t = noise.total_noise(torch.tensor(t, dtype=torch.float64))
    sig_s = noise.total_noise(torch.tensor(t - dt, dtype=torch.float64))
    a_t, a_s = torch.exp(-sig_t), torch.exp(-sig_s)
    score = torch.ones(1, 1, 7, dtype=torch.float64)
    score[0, 0, :6] = p / torch.expm1(sig_t)
    w = analytic_probs(g, noise, score, torch.tensor([[6]]), torch.tensor([t], dtype=torch.float64), dt)[0, 0]
    torch.testing.assert_close(w[:6], p * (a_s - a_t) / (1 - a_t))
    assert w[6].item() == pytest.approx(((1 - a_s) / (1 - a_t)).item(), rel=1e-12)


def test_denoise_drops_mask_and_is_proportional_to_p():
    g, noise = Absorbing(6), LogLinear()
    p = torch.softmax(torch.randn(6, dtype=torch.float64), 0)
    eps = 1e-5
    sig = noise.total_noise(torch.tensor(eps, dtype=torch.float64))
    score = torch.ones(1, 1, 7, dtype=torch.float64)
    score[0, 0, :6] = p / torch.expm1(sig)
    w = denoise_probs(g, noise, score, torch.tensor([[6]]), torch.tensor([eps], dtype=torch.float64))[0, 0]
    assert w.shape == (6,)
    torch.testing.assert_close(w / w.sum(), p)


def test_sample_categorical_frequencies_chi_square():
    """I10: 1e5 float64 draws match w / sum(w); zero and negative weights are never drawn."""
    w = torch.tensor([0.1, 0.2, 0.0, 0.7, -0.3], dtype=torch.float64)
    draws = sample_categorical(w.expand(100_000, 5), generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5)
    assert counts[2] == 0 and counts[4] == 0
    expected = torch.tensor([0.1, 0.2, 0.7]) * 100_000
    assert chisquare(counts[[0, 1, 3]].numpy(), expected.numpy()).pvalue > 1e-3


def test_sample_categorical_unnormalised_and_reproducible():
    w = torch.tensor([[3.0, 1.0], [0.0, 5.0]])
    a = sample_categorical(w.expand(4, 2, 2), generator=torch.Generator().manual_seed(1))
    b = sample_categorical(w.expand(4, 2, 2), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and (a[:, 1] == 1).all()


def test_float64_draw_reaches_the_tail():
    """A weight ratio of e^-20 is drawn at its true rate: float32 uniforms would cap the race and never draw it."""
    w = torch.tensor([1.0, math.exp(-20) * 2e8], dtype=torch.float64)  # P(1) = 0.292...
    draws = sample_categorical(w.expand(20_000, 2), generator=torch.Generator().manual_seed(0))
    p1 = w[1] / w.sum()
    assert draws.double().mean().item() == pytest.approx(p1.item(), abs=0.015)


def test_uniform_euler_weights_are_exact_in_float64():
    """Uniform Euler: w_y = dt sigma'(t) s_y / N off x and 1 - sum at x, to float64 precision (1/N must not be
    rounded to float32 on the way: that was a 3e-8 relative error)."""
    torch.manual_seed(0)
    n, dt = 7, 0.01
    graph, noise = Uniform(n), Geometric()
    x = torch.randint(0, n, (2, 4))
    score = torch.rand(2, 4, n, dtype=torch.float64) + 0.1
    t = torch.tensor([0.9, 0.3], dtype=torch.float64)
    h = dt * noise.rate_noise(t)[:, None, None]
    off = (h * score / n).scatter(-1, x[..., None], 0.0)
    expected = off.scatter(-1, x[..., None], 1.0 - off.sum(-1, keepdim=True))
    torch.testing.assert_close(euler_probs(graph, noise, score, x, t, dt), expected, rtol=1e-14, atol=1e-15)
