"""The NELBO estimator against closed forms and quadrature on models whose likelihood is known
(docs/sedd.md#elbo, docs/sedd.md#i9)."""
import math

import numpy as np
import pytest
import torch

from oracles import FactorisedAbsorbOracle, FactorisedUniformOracle, PairDenoiserAbsorb, random_factorised
from pysedd.errors import UserError
from pysedd.graph import Absorbing, Uniform
from pysedd.likelihood import conditional_nelbo, perplexity, sequence_nelbo
from pysedd.noise import Geometric, LogLinear

EPS = 1e-3  # the log-linear schedule's eps: a fraction EPS of tokens is still clean at t = 1


def test_single_token_integral_by_quadrature():
    """I9: int_0^1 sigma' (1 - e^-sigma) DSE dt = (1 - eps)(-log p_x0) for the exact L = 1 model (the integrand is
    constant: sigma'/e_sigma = 1/t and the mask probability is (1 - eps) t)."""
    p = random_factorised(1, 5, seed=0)
    model, graph, noise = FactorisedAbsorbOracle(p), Absorbing(5), LogLinear()
    nodes, weights = np.polynomial.legendre.leggauss(64)
    t = torch.tensor((nodes + 1) / 2, dtype=torch.float64)
    sigma, dsigma = noise(t)
    for x0 in range(5):
        masked = torch.full((64, 1), 5)
        dse = graph.score_entropy(model(masked, sigma), sigma, masked, torch.full((64, 1), x0))[:, 0]
        integral = float((torch.tensor(weights / 2) * dsigma * (-torch.expm1(-sigma)) * dse).sum())
        assert integral == pytest.approx((1 - EPS) * -math.log(p[0, x0]), rel=1e-6)


def test_single_token_stratified_estimator_within_three_standard_errors():
    p = random_factorised(1, 5, seed=0)
    x0 = torch.arange(5)[:, None]
    res = sequence_nelbo(FactorisedAbsorbOracle(p), Absorbing(5), LogLinear(), x0, n_samples=512, seed=1)
    truth = (1 - EPS) * -p[0].log()
    assert res.nelbo.dtype == torch.float64 and res.n_tokens.tolist() == [1] * 5
    assert ((res.nelbo - truth).abs() < 3 * res.stderr).all()
    assert (res.stderr < 0.15 * truth).all()


def test_single_token_monte_carlo_estimator_against_its_exact_variance():
    """Plain Monte Carlo: the term (1/t) 1[masked] (-log p) is heavy-tailed in t, with the closed-form variance
    (log p)^2 [(1 - eps) ln(1/eps_s) / (1 - eps_s) - (1 - eps)^2]. E[term | t] is constant here, so stratifying t
    cannot reduce that variance, but its collapsed-strata standard error estimates it (every run sees the small-t
    stratum), where a plain Monte Carlo sample standard deviation runs low."""
    p = random_factorised(1, 5, seed=0)
    x0 = torch.arange(5)[:, None]
    K = 8192
    res = sequence_nelbo(FactorisedAbsorbOracle(p), Absorbing(5), LogLinear(), x0, n_samples=K, stratified=False, seed=1)
    truth = (1 - EPS) * -p[0].log()
    sd = p[0].log().abs() * math.sqrt((1 - EPS) * math.log(1 / 1e-3) / (1 - 1e-3) - (1 - EPS) ** 2)
    assert ((res.nelbo - truth).abs() < 3 * sd / math.sqrt(K)).all()
    strat = sequence_nelbo(FactorisedAbsorbOracle(p), Absorbing(5), LogLinear(), x0, n_samples=K, seed=1)
    ratio = strat.stderr / (sd / math.sqrt(K))
    assert ((ratio > 0.5) & (ratio < 2.0)).all()


def exact_truncated_nelbo(model, graph, noise, x0, sampling_eps=1e-3, n_grid=4001):
    """E_{t ~ U[eps_s, 1]} sum_l sigma'(t) E_{x_t}[DSE_l], by enumerating every mask pattern of L = 2 and Simpson's rule in t."""
    t = torch.linspace(sampling_eps, 1.0, n_grid, dtype=torch.float64)
    sigma, dsigma = noise(t)
    keep = torch.exp(-sigma)  # probability that a token is still clean
    total = torch.zeros_like(t)
    for pattern in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        x_t = torch.tensor([graph.mask_index if m else v for m, v in zip(pattern, x0)]).expand(n_grid, 2)
        prob = torch.ones_like(t)
        for m in pattern:
            prob = prob * ((1 - keep) if m else keep)
        dse = graph.score_entropy(model(x_t, sigma), sigma, x_t, torch.tensor(x0).expand(n_grid, 2)).sum(1)
        total += prob * dsigma * dse
    h = (1 - sampling_eps) / (n_grid - 1)
    simpson = h / 3 * (total[0] + total[-1] + 4 * total[1:-1:2].sum() + 2 * total[2:-1:2].sum())
    return float(simpson) / (1 - sampling_eps)


def pair_model(seed=0, N=3):
    g = torch.Generator().manual_seed(seed)
    marg = torch.softmax(torch.randn(2, N, generator=g, dtype=torch.float64), -1)
    cond = torch.softmax(2 * torch.randn(2, N, N, generator=g, dtype=torch.float64), -1)
    return PairDenoiserAbsorb(marg, cond)


def test_nelbo_bounds_the_exact_nll_and_the_estimator_matches_quadrature():
    """A context-dependent two-token model: its own likelihood is the any-order mixture, computable exactly. The
    bound is above it, and the stratified estimate agrees with the exact expectation within 3 standard errors."""
    model, graph, noise = pair_model(), Absorbing(3), LogLinear()
    x0 = torch.tensor([[a, b] for a in range(3) for b in range(3)])
    res = sequence_nelbo(model, graph, noise, x0, n_samples=1024, seed=0)
    for row, est, se in zip(x0.tolist(), res.nelbo.tolist(), res.stderr.tolist()):
        exact = exact_truncated_nelbo(model, graph, noise, row)
        assert exact >= model.nll(row)
        assert abs(est - exact) < 3 * se
    # the ensemble bound is far from the truth for this model: the test above is not vacuous
    assert (res.nelbo - torch.tensor([model.nll(r) for r in x0.tolist()])).max() > 0.1


def test_more_t_samples_tighten_the_estimate():
    model, graph, noise = pair_model(), Absorbing(3), LogLinear()
    x0 = torch.tensor([[0, 2], [1, 1]])
    few = sequence_nelbo(model, graph, noise, x0, n_samples=32, seed=0)
    many = sequence_nelbo(model, graph, noise, x0, n_samples=512, seed=0)
    assert (many.stderr < few.stderr / 2.5).all()  # ~ 1/sqrt(16) = 1/4 expected


def test_estimates_do_not_depend_on_batching_and_are_seeded():
    model, graph, noise = pair_model(), Absorbing(3), LogLinear()
    x0 = torch.tensor([[0, 2], [1, 1], [2, 0]])
    a = sequence_nelbo(model, graph, noise, x0, n_samples=16, seed=3, batch_size=5).nelbo
    b = sequence_nelbo(model, graph, noise, x0, n_samples=16, seed=3).nelbo
    c = sequence_nelbo(model, graph, noise, x0, n_samples=16, seed=4).nelbo
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not torch.equal(a, c)


def test_uniform_graph_exact_model_is_tight():
    """Uniform graph, exact factorised scores: the bound is tight up to the ignored ends of the t integral."""
    p = random_factorised(2, 4, seed=7)
    x0 = torch.tensor([[0, 1], [3, 2]])
    res = sequence_nelbo(FactorisedUniformOracle(p), Uniform(4), Geometric(), x0, n_samples=2048, seed=0)
    truth = -(p[0, x0[:, 0]].log() + p[1, x0[:, 1]].log())
    assert ((res.nelbo - truth).abs() < 3 * res.stderr + 0.02 * truth).all()


def test_conditional_nelbo_scores_only_the_target_with_a_clean_context():
    p = random_factorised(4, 3, seed=8)

    class Spy(FactorisedAbsorbOracle):
        pass

    model = Spy(p)
    out = conditional_nelbo(model, Absorbing(3), LogLinear(), [[0, 2], [1, 1, 0]], [[1, 2], [2]], n_samples=4096,
                            seed=0, with_stderr=True)
    for (ctx, tgt), (est, se) in zip([([0, 2], [1, 2]), ([1, 1, 0], [2])], out):
        truth = (1 - EPS) * -sum(math.log(p[len(ctx) + i, v]) for i, v in enumerate(tgt))
        assert abs(est - truth) < 3 * se
    for x, _ in model.calls:  # the context never reached the model masked
        n_ctx = 2 if x.shape[1] == 4 else 3
        assert (x[:, :n_ctx] != 3).all()
    plain = conditional_nelbo(Spy(p), Absorbing(3), LogLinear(), [[0, 2]], [[1, 2]], n_samples=4096, seed=0)
    assert plain == [out[0][0]]  # same seed, same request: same number, whatever else was in the call


def test_perplexity_both_orders_by_hand():
    res = perplexity([10.0, 30.0], [5, 10])
    assert res["mean_then_exp"] == pytest.approx(math.exp(40 / 15), rel=1e-12)
    assert res["exp_then_mean"] == pytest.approx((math.exp(2) + math.exp(3)) / 2, rel=1e-12)
    equal = perplexity([10.0, 30.0, 12.0], [10, 10, 10])  # Jensen: with equal lengths exp-then-mean is the larger
    assert equal["exp_then_mean"] > equal["mean_then_exp"] == pytest.approx(math.exp(52 / 30), rel=1e-12)
    assert res["primary"] == "mean_then_exp" and res["n_tokens"] == 15 and res["n_sequences"] == 2


def test_likelihood_bad_input():
    model, graph, noise = pair_model(), Absorbing(3), LogLinear()
    with pytest.raises(UserError, match="outside the vocabulary"):
        sequence_nelbo(model, graph, noise, torch.tensor([[0, 3]]))
    with pytest.raises(UserError, match="n_samples"):
        sequence_nelbo(model, graph, noise, torch.tensor([[0, 1]]), n_samples=0)
    with pytest.raises(UserError, match="empty target"):
        conditional_nelbo(model, graph, noise, [[0]], [[]])
    with pytest.raises(UserError, match="as many NLL sums"):
        perplexity([1.0, 2.0], [3])
