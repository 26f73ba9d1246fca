"""Schedules and graphs against closed forms and brute-force matrix exponentials
(docs/sedd.md, invariants I1, I4, I6, I7)."""
import math

import pytest
import torch

from pysedd.errors import UserError
from pysedd.graph import Absorbing, Uniform, esigm1
from pysedd.noise import Geometric, LogLinear



@pytest.fixture(autouse=True)
def float64_default():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------- schedules (I1)
def test_loglinear_closed_forms():
    noise = LogLinear()
    t = torch.tensor([0.0, 0.01, 0.5, 1.0], dtype=torch.float64)
    sigma, rate = noise(t)
    assert sigma[0] == 0.0
    assert sigma[-1].item() == pytest.approx(6.907755279, abs=1e-9)
    assert rate[0].item() == pytest.approx(0.999, abs=1e-15)
    assert rate[-1].item() == pytest.approx(999.0, rel=1e-12)
    torch.testing.assert_close(-torch.expm1(-sigma), 0.999 * t, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(rate[1:] / esigm1(sigma[1:]), 1 / t[1:], rtol=1e-12, atol=0)
    assert (rate[1] / esigm1(sigma[1])).item() == pytest.approx(100.0, rel=1e-12)


def test_loglinear_float32_input_is_computed_in_float64():
    sigma, rate = LogLinear()(torch.tensor([1.0], dtype=torch.float32))
    assert sigma.dtype == torch.float32
    assert sigma.item() == pytest.approx(6.907755279, rel=2e-7)  # naive float32 arithmetic is off by 1.3e-5
    assert rate.item() == pytest.approx(999.0, rel=2e-7)


def test_geometric_closed_forms():
    noise = Geometric(1e-4, 20)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    sigma, rate = noise(t)
    assert sigma[0].item() == pytest.approx(1e-4, rel=1e-14)
    assert sigma[-1].item() == pytest.approx(20.0, rel=1e-14)
    torch.testing.assert_close(rate / sigma, torch.full_like(t, 12.206072646), rtol=1e-10, atol=0)
    # rate is the derivative of sigma
    h = 1e-6
    num = (noise.total_noise(t[1:-1] + h) - noise.total_noise(t[1:-1] - h)) / (2 * h)
    torch.testing.assert_close(num, rate[1:-1], rtol=1e-7, atol=0)


def test_loglinear_rate_is_derivative():
    noise, h = LogLinear(), 1e-6
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    num = (noise.total_noise(t + h) - noise.total_noise(t - h)) / (2 * h)
    torch.testing.assert_close(num, noise.rate_noise(t), rtol=1e-7, atol=0)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_schedule_rejects_t_outside_unit_interval(bad):
    with pytest.raises(UserError, match="must lie in"):
        LogLinear()(torch.tensor([0.5, bad]))


def test_schedule_rejects_bad_parameters():
    with pytest.raises(UserError, match="eps"):
        LogLinear(eps=0.0)
    with pytest.raises(UserError, match="sigma_min < sigma_max"):
        Geometric(1.0, 0.5)


# ---------------------------------------------------------------- brute-force helpers
def q_absorb(n):
    """Q[to, from] of the absorbing graph over n real tokens + MASK."""
    V = n + 1
    Q = torch.zeros(V, V)
    for j in range(n):
        Q[n, j], Q[j, j] = 1.0, -1.0
    return Q


def q_uniform(n):
    return torch.ones(n, n) / n - torch.eye(n)


def dse_bruteforce(Q, log_score, sigma, x, x0):
    """Definition: sum_{y != x} Q[x, y] [e^{s_y} - r_y s_y + K(r_y)], r_y = p(y|x0)/p(x|x0), p = expm(sigma Q)[:, x0]."""
    P = torch.linalg.matrix_exp(sigma * Q)
    p = P[:, x0]
    total = torch.zeros(())
    for y in range(Q.shape[0]):
        if y == x or Q[x, y] == 0:
            continue
        r = p[y] / p[x]
        K = r * (torch.log(r) - 1) if r > 0 else torch.zeros(())
        total = total + Q[x, y] * (torch.exp(log_score[y]) - r * log_score[y] + K)
    return total


# ---------------------------------------------------------------- absorbing graph (I4, I7)
def test_absorb_transitions_match_matrix_exponential():
    n, sigma = 6, 0.7
    g, Q = Absorbing(n), q_absorb(n)
    P = torch.linalg.matrix_exp(sigma * Q)
    ids = torch.arange(n + 1)
    torch.testing.assert_close(g.transition(ids, torch.tensor(sigma)), P.T)  # row i = column i of expm
    torch.testing.assert_close(g.transp_transition(ids, torch.tensor(sigma)), P)  # row i of expm(sigma Q)
    torch.testing.assert_close(g.rate(ids).double(), Q.T)
    torch.testing.assert_close(g.transp_rate(ids).double(), Q)


def test_absorb_staggered_score_is_expm_minus_dsigma_q():
    n, dsigma = 5, 0.3
    g, Q = Absorbing(n), q_absorb(n)
    s = torch.rand(3, 4, n + 1) + 0.1
    expected = torch.einsum("ij,blj->bli", torch.linalg.matrix_exp(-dsigma * Q), s)
    torch.testing.assert_close(g.staggered_score(s, torch.full((3,), dsigma)), expected)


@pytest.mark.parametrize("sigma", [1e-3, 0.05, 0.7, 3.0])
def test_absorb_score_entropy_equals_definition(sigma):
    n = 6
    g, Q = Absorbing(n), q_absorb(n)
    torch.manual_seed(0)
    s = torch.randn(n + 1)
    for x0 in range(n):
        got = g.score_entropy(s[None, None], torch.tensor([sigma]), torch.tensor([[n]]), torch.tensor([[x0]]))
        want = dse_bruteforce(Q, s, sigma, n, x0)
        torch.testing.assert_close(got[0, 0], want, rtol=1e-10, atol=1e-12)


def test_absorb_score_entropy_zero_at_optimum_and_unmasked():
    n, sigma = 6, 0.4
    g = Absorbing(n)
    r = 1 / math.expm1(sigma)
    x0 = torch.tensor([[2, 3]])
    s = torch.full((1, 2, n + 1), -1e4)
    s[0, 0, 2] = math.log(r)
    s[0, 1] = torch.randn(n + 1)
    loss = g.score_entropy(s, torch.tensor([sigma]), torch.tensor([[n, 3]]), x0)
    assert abs(loss[0, 0].item()) < 1e-12  # true ratio at the masked position
    assert loss[0, 1].item() == 0.0  # unmasked positions contribute exactly nothing
    s.requires_grad_(True)
    g.score_entropy(s, torch.tensor([sigma]), torch.tensor([[n, 3]]), x0).sum().backward()
    assert s.grad[0, 1].abs().max() == 0  # ... and no gradient
    random = g.score_entropy(torch.randn(1, 1, n + 1), torch.tensor([sigma]), torch.tensor([[n]]), x0[:, :1])
    assert random.item() > 0


def test_absorb_normalised_predictor_gives_mdlm_integrand():
    """With s_j = log p_j - log e_sigma and sum p = 1, the loss is MDLM's integrand -log p_x0 / e_sigma."""
    n, sigma = 6, 0.7
    g = Absorbing(n)
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(n), 0)
    s = torch.zeros(1, 1, n + 1)
    s[0, 0, :n] = torch.log(p) - math.log(math.expm1(sigma))
    for x0 in range(n):
        got = g.score_entropy(s, torch.tensor([sigma]), torch.tensor([[n]]), torch.tensor([[x0]]))
        assert got.item() == pytest.approx(-math.log(p[x0]) / math.expm1(sigma), rel=1e-12)


def test_absorb_score_entropy_float32_stable_at_small_sigma():
    n, sigma = 50, 1e-3
    g = Absorbing(n)
    r = 1 / math.expm1(sigma)
    s = torch.full((1, 1, n + 1), -30.0)
    s[0, 0, 7] = math.log(r) + 1e-3
    want = g.score_entropy(s, torch.tensor([sigma]), torch.tensor([[n]]), torch.tensor([[7]]))
    got = g.score_entropy(s.float(), torch.tensor([sigma], dtype=torch.float32), torch.tensor([[n]]), torch.tensor([[7]]))
    assert got.item() == pytest.approx(want.item(), rel=2e-3)


def test_absorb_sample_transition_rate():
    g = Absorbing(10)
    x0 = torch.randint(0, 10, (4000, 50))
    sigma = torch.full((4000,), 0.5)
    xt = g.sample_transition(x0, sigma, generator=torch.Generator().manual_seed(0))
    frac = (xt == 10).double().mean().item()
    assert frac == pytest.approx(1 - math.exp(-0.5), abs=0.005)
    assert torch.equal(xt[xt != 10], x0[xt != 10])


# ---------------------------------------------------------------- uniform graph (I6)
def test_uniform_transitions_match_matrix_exponential():
    n, sigma = 5, 0.9
    g, Q = Uniform(n), q_uniform(n)
    P = torch.linalg.matrix_exp(sigma * Q)
    ids = torch.arange(n)
    trans = g.transition(ids, torch.tensor(sigma))
    torch.testing.assert_close(trans, P.T)
    torch.testing.assert_close(trans.sum(-1), torch.ones(n))
    torch.testing.assert_close(g.rate(ids), Q.T)


def test_uniform_staggered_score_is_expm_minus_dsigma_q():
    n, dsigma = 5, 0.25
    g, Q = Uniform(n), q_uniform(n)
    s = torch.rand(2, 3, n) + 0.1
    expected = torch.einsum("ij,blj->bli", torch.linalg.matrix_exp(-dsigma * Q), s)
    torch.testing.assert_close(g.staggered_score(s, torch.full((2,), dsigma)), expected)


@pytest.mark.parametrize("sigma", [0.1, 0.8, 2.0, 7.0])
def test_uniform_score_entropy_equals_definition(sigma):
    n = 5
    g, Q = Uniform(n), q_uniform(n)
    torch.manual_seed(2)
    s = torch.randn(n)
    for x in range(n):
        for x0 in range(n):
            got = g.score_entropy(s[None, None], torch.tensor([sigma]), torch.tensor([[x]]), torch.tensor([[x0]]))
            want = dse_bruteforce(Q, s, sigma, x, x0)
            torch.testing.assert_close(got[0, 0], want, rtol=1e-9, atol=1e-12)


def test_uniform_score_entropy_zero_at_true_ratios_even_at_tiny_sigma():
    n = 7
    g = Uniform(n)
    for sigma in (1e-4, 1e-3, 0.5):
        P = torch.linalg.matrix_exp(sigma * q_uniform(n))
        for x, x0 in ((2, 2), (2, 5)):
            s = torch.log(P[:, x0] / P[x, x0])
            loss = g.score_entropy(s[None, None], torch.tensor([sigma]), torch.tensor([[x]]), torch.tensor([[x0]]))
            assert abs(loss.item()) < 1e-9 * max(1.0, 1 / sigma)
            loss32 = g.score_entropy(s.float()[None, None], torch.tensor([sigma], dtype=torch.float32), torch.tensor([[x]]), torch.tensor([[x0]]))
            assert torch.isfinite(loss32).all()


def test_graph_rejects_bad_input():
    g = Absorbing(5)
    with pytest.raises(UserError, match="sigma must be >= 0"):
        g.sample_transition(torch.zeros(2, 3, dtype=torch.long), torch.tensor([-1.0, 0.5]))
    with pytest.raises(UserError, match="outside"):
        g.check_ids(torch.tensor([[0, 9]]))
    with pytest.raises(UserError, match="does not broadcast"):
        g.sample_transition(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0.1, 0.2, 0.3]))
