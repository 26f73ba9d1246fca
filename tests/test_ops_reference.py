"""The pure-PyTorch formulas of pysedd.ops.reference against brute force from the rate matrices: score entropy
from its definition, reverse-step weights from matrix exponentials."""
import math

import pytest
import torch

from pysedd.ops import reference as R

f64 = torch.float64


def rate_matrix(N, absorb):
    """Q[to, from]: absorbing (dim N+1, MASK = N) or uniform (dim N)."""
    if absorb:
        Q = torch.zeros(N + 1, N + 1, dtype=f64)
        Q[N, :N] = 1.0
        Q[range(N), range(N)] = -1.0
        return Q
    return torch.full((N, N), 1.0 / N, dtype=f64) - torch.eye(N, dtype=f64)


def brute_force_dse(s, sigma, x, x0, Q):
    """l = sum_{y != x} Q[x, y] * [e^{s_y} - r_y s_y + K(r_y)], r_y = p(y|x0) / p(x|x0), p = expm(sigma Q)[:, x0]."""
    p = torch.linalg.matrix_exp(sigma * Q)[:, x0]
    total = 0.0
    for y in range(Q.shape[0]):
        if y == x or Q[x, y] == 0:
            continue
        r = (p[y] / p[x]).item()
        K = r * (math.log(r) - 1) if r > 0 else 0.0
        total += Q[x, y].item() * (math.exp(s[y].item()) - r * s[y].item() + K)
    return total


@pytest.mark.parametrize("absorb", [True, False])
@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0])
def test_score_entropy_matches_definition(absorb, sigma):
    g = torch.Generator().manual_seed(1)
    N, L = 6, 12
    V = N + 1 if absorb else N
    s = torch.randn(1, L, V, dtype=f64, generator=g)
    x0 = torch.randint(0, N, (1, L), generator=g)
    xt = torch.randint(0, V, (1, L), generator=g)
    if absorb:
        xt[0, ::2] = N
    else:
        xt[0, :4] = x0[0, :4]  # both branches x = x0 and x != x0
    got = R.score_entropy(s, torch.tensor([sigma], dtype=f64), xt, x0, absorb)
    Q = rate_matrix(N, absorb)
    for l in range(L):
        want = brute_force_dse(s[0, l], sigma, xt[0, l].item(), x0[0, l].item(), Q)
        assert got[0, l].item() == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_absorb_invariants():
    # normalised predictor: l = -log p_x0 / e_sigma (docs/sedd.md#i4)
    N, sigma = 6, 0.7
    p = torch.softmax(torch.randn(N, dtype=f64), 0)
    e = math.expm1(sigma)
    s = torch.cat([torch.log(p) - math.log(e), torch.zeros(1, dtype=f64)])[None, None]
    x0 = torch.tensor([[2]])
    got = R.score_entropy(s, torch.tensor([sigma], dtype=f64), torch.tensor([[N]]), x0, True)
    assert got.item() == pytest.approx(-math.log(p[2].item()) / e, rel=1e-6)
    # zero at the true ratio, exactly zero when unmasked
    s = torch.full((1, 1, N + 1), -1e4, dtype=f64)
    s[0, 0, 2] = -math.log(e)
    assert R.score_entropy(s, torch.tensor([sigma], dtype=f64), torch.tensor([[N]]), x0, True).item() == \
        pytest.approx(0.0, abs=1e-12)
    assert R.score_entropy(torch.randn(1, 1, N + 1), torch.tensor([sigma]), torch.tensor([[3]]), x0, True).item() == 0


def test_uniform_zero_at_true_ratios_small_sigma():
    # phi-form stays exact where the closed form cancels (docs/sedd.md#numerics): DSE = 0 at s = log r in fp32
    N, sigma = 50, 1e-4
    e = math.expm1(sigma)
    for x, x0 in [(3, 3), (3, 7)]:
        if x == x0:
            r = torch.full((N,), e / (e + N), dtype=f64)
        else:
            r = torch.ones(N, dtype=f64)
            r[x0] = 1 + N / e
        s = torch.log(r).float()[None, None]
        got = R.score_entropy(s, torch.tensor([sigma]), torch.tensor([[x]]), torch.tensor([[x0]]), False)
        assert abs(got.item()) < 1e-4


def brute_force_weights(log_score, x, coef, predictor, Q):
    """Weights of one row from the matrices: euler = onehot + h * reverse_rate, analytic/denoise =
    expm(-D Q) score (staggered) * expm(D Q)[x, :] (transposed transition)."""
    score = log_score.exp()
    V = Q.shape[0]
    onehot = torch.nn.functional.one_hot(torch.tensor(x), V).double()
    if predictor == "euler":
        rate = Q[x, :] * score
        rate[x] = 0.0
        rate[x] = -rate.sum()
        return onehot + coef * rate
    stag = torch.linalg.matrix_exp(-coef * Q) @ score
    return stag * torch.linalg.matrix_exp(coef * Q)[x, :]


@pytest.mark.parametrize("absorb", [True, False])
@pytest.mark.parametrize("predictor", ["euler", "analytic", "denoise"])
def test_reverse_weights_match_matrices(absorb, predictor):
    g = torch.Generator().manual_seed(2)
    N = 5
    V = N + 1 if absorb else N
    Q = rate_matrix(N, absorb)
    s = torch.randn(1, 3, V, dtype=f64, generator=g)
    x = torch.tensor([[N if absorb else 1, 2, N if absorb else 4]])
    s[0, range(3), x[0]] = 0.0  # self-entry zeroed, as the model does
    coef = torch.tensor([0.37], dtype=f64)
    got = R.reverse_weights(s, x, coef, predictor, absorb)
    for l in range(3):
        want = brute_force_weights(s[0, l], x[0, l].item(), 0.37, predictor, Q)
        if absorb and predictor == "denoise":
            want = want[:N]
        torch.testing.assert_close(got[0, l], want, rtol=1e-10, atol=1e-12)


def test_euler_equals_analytic_for_absorb_loglinear():
    # dt * sigma'(t) = expm1(sigma(t) - sigma(t - dt)) for loglinear (docs/sedd.md#numerics)
    eps, t, dt = 1e-3, 0.6, 0.01
    sig = lambda u: -math.log1p(-(1 - eps) * u)  # noqa: E731
    h = dt * (1 - eps) / (1 - (1 - eps) * t)
    delta = sig(t) - sig(t - dt)
    assert h == pytest.approx(math.expm1(delta), rel=1e-12)
    s = torch.randn(2, 4, 8, dtype=f64)
    s[..., -1] = 0.0
    x = torch.full((2, 4), 7)
    we = R.reverse_weights(s, x, torch.full((2,), h, dtype=f64), "euler", True)
    wa = R.reverse_weights(s, x, torch.full((2,), delta, dtype=f64), "analytic", True)
    torch.testing.assert_close(we, wa, rtol=1e-12, atol=1e-12)


def test_absorb_raw_loss_is_scaled_score_entropy():
    """The fused-layer row loss on raw logits equals e_sigma * score entropy of s = raw - log e - log N
    with s_MASK = 0 (scale_by_sigma + self-entry zeroing), and its in-place gradient is the autograd one."""
    g = torch.Generator().manual_seed(4)
    n, N, sigma = 6, 9, 0.4
    raw = torch.randn(n, N + 1, dtype=f64, generator=g)
    x0 = torch.randint(0, N, (n,), generator=g)
    w = torch.rand(n, dtype=f64, generator=g)
    e = math.expm1(sigma)
    s = raw - math.log(e) - math.log(N)
    s[:, N] = 0.0
    se = R.score_entropy(s[None], torch.tensor([sigma], dtype=f64), torch.full((1, n), N), x0[None], True)[0]
    raw_req = raw.clone().requires_grad_()
    logits = raw.clone()
    rows = R.absorb_raw_loss_grad_(logits, x0, w, N)
    torch.testing.assert_close(rows.double(), (w * e * se.double()), rtol=1e-6, atol=0)
    bracket = (raw_req[:, :N].exp().sum(-1) / N - raw_req.gather(1, x0[:, None])[:, 0] + math.log(N) - 1)
    (w * bracket).sum().backward()
    torch.testing.assert_close(logits, raw_req.grad.float().double(), rtol=1e-6, atol=1e-7)


def test_disable_ext_env_forces_reference():
    import os
    import subprocess
    import sys

    code = ("import torch, pysedd.ops as o; assert not o.kernel_available(torch.zeros(2)); "
            "o.use_reference(False); assert o.kernel_available(torch.zeros(2)) == o.HAS_EXT")
    env = dict(os.environ, PYSEDD_DISABLE_EXT="1")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
