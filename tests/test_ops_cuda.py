"""The CUDA kernels against the reference (skipped without a GPU and a CUDA build of pysedd._C)."""
import math

import pytest
import torch
from scipy.stats import chisquare

import pysedd.ops as ops
from pysedd.ops import reference as R

from oracles import binned_chisquare_pvalue, realistic_step_case

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and "cuda" in ops.KERNEL_DEVICES),
                                reason="needs a GPU and pysedd._C built with CUDA")
f64 = torch.float64


def inputs(absorb, B, L, V, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    N = V - 1 if absorb else V
    s = (torch.randn(B, L, V, generator=g, dtype=f64) * 1.5 - 1.0).to(dtype)
    x0 = torch.randint(0, N, (B, L), generator=g)
    xt = torch.where(torch.rand(B, L, generator=g) < 0.5, N if absorb else x0, torch.randint(0, N, (B, L), generator=g))
    if absorb:
        xt = torch.where(xt == N, xt, x0)
    sigma = 0.05 + 3 * torch.rand(B, generator=g, dtype=f64)
    return [t.cuda() for t in (s, xt, x0, sigma)]


@pytest.mark.parametrize("absorb,V", [(True, 37), (False, 37), (True, 50258), (False, 1001)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_score_entropy_parity(absorb, V, dtype):
    s, xt, x0, sigma = inputs(absorb, 2, 5, V, dtype)
    g = int(not absorb)
    grad_out = torch.rand(2, 5, device="cuda")
    s64 = s.double().requires_grad_()
    want = R.score_entropy(s64, sigma, xt, x0, absorb)
    (want_g,) = torch.autograd.grad((want * grad_out.double()).sum(), s64)
    got = torch.ops.pysedd.score_entropy_fwd(s, xt, x0, sigma, g)
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-5)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
    got_g = torch.ops.pysedd.score_entropy_bwd(grad_out, s, xt, x0, sigma, g)
    torch.testing.assert_close(got_g.double(), want_g, **tol)
    total, g_w = torch.ops.pysedd.score_entropy_weighted(s, xt, x0, sigma, grad_out, g)
    torch.testing.assert_close(g_w.double(), want_g, **tol)
    torch.testing.assert_close(total.double(), (want.detach() * grad_out.double()).sum(), rtol=1e-5, atol=1e-4)


def test_opcheck_cuda():
    s, xt, x0, sigma = inputs(True, 2, 3, 13)
    torch.library.opcheck(torch.ops.pysedd.score_entropy_fwd.default, (s.requires_grad_(), xt, x0, sigma, 0))
    torch.library.opcheck(torch.ops.pysedd.reverse_step.default, (s.detach(), xt, sigma, None, 0, 1, 3, 4))


@pytest.mark.parametrize("absorb", [True, False])
@pytest.mark.parametrize("predictor", ["euler", "analytic", "denoise"])
def test_reverse_step_frequencies_cuda(absorb, predictor):
    V, n = 9, 30000
    N = V - 1 if absorb else V
    s = (torch.randn(1, 1, V, generator=torch.Generator().manual_seed(11)) * 1.2).cuda()
    x = torch.tensor([[N if absorb else 3]], device="cuda")
    s[0, 0, x[0, 0]] = 0.0
    coef = torch.tensor([0.25 if predictor == "euler" else 0.6], dtype=f64, device="cuda")
    w = R.reverse_weights(s, x, coef, predictor, absorb)[0, 0].clamp_min(0).cpu()
    p = w / w.sum()
    pred = ops.PREDICTOR_CODES[predictor]
    draws = torch.ops.pysedd.reverse_step(s.expand(n, 1, V).contiguous(), x.expand(n, 1).contiguous(),
                                          coef.expand(n).contiguous(), None, int(not absorb), pred, 2024, 1)
    again = torch.ops.pysedd.reverse_step(s.expand(n, 1, V).contiguous(), x.expand(n, 1).contiguous(),
                                          coef.expand(n).contiguous(), None, int(not absorb), pred, 2024, 1)
    assert torch.equal(draws, again)
    counts = torch.bincount(draws.flatten().cpu(), minlength=V)[: p.numel()]
    assert counts[p == 0].sum() == 0
    keep = p > 0
    assert chisquare(counts[keep].numpy(), (p[keep] * n).numpy()).pvalue > 1e-4


@pytest.mark.parametrize("absorb,predictor", [(True, "euler"), (True, "analytic"), (True, "denoise"),
                                              (False, "euler"), (False, "analytic")])
def test_reverse_step_law_at_a_realistic_vocabulary_cuda(absorb, predictor):
    """V = 1537 (six 256-wide passes of the block reduction and a ragged one), a Zipf-like head and a long tail:
    chi-square of the draws against the weights (cells expecting < 20 merged) and the mass past the first 256."""
    n = 20000
    s, x, coef, p, N = realistic_step_case(absorb, predictor)
    V = s.shape[-1]
    draws = torch.ops.pysedd.reverse_step(s.expand(n, 1, V).contiguous().cuda(), x.expand(n, 1).contiguous().cuda(),
                                          coef.expand(n).contiguous().cuda(), None, int(not absorb),
                                          ops.PREDICTOR_CODES[predictor], 77, 2).cpu()
    counts = torch.bincount(draws.flatten(), minlength=V)[: p.numel()].double()
    assert counts[p == 0].sum() == 0
    assert binned_chisquare_pvalue(counts, p, n) > 1e-4
    tail, got = p[256:N].sum().item(), counts[256:N].sum().item() / n
    assert tail > 0.1 and abs(got - tail) < 4 * math.sqrt(tail * (1 - tail) / n)


def test_frozen_and_fused_cuda():
    s, xt, x0, sigma = inputs(True, 3, 40, 33)
    frozen = torch.rand(3, 40, device="cuda") < 0.3
    out = torch.ops.pysedd.reverse_step(s, xt, sigma, frozen, 0, 1, 1, 2)
    assert torch.equal(out[frozen], xt[frozen]) and torch.equal(out[xt != 32], xt[xt != 32])
    h = torch.randn(50, 32, device="cuda", requires_grad=True)
    W = (torch.randn(101, 32, device="cuda") * 0.2).requires_grad_()
    b = torch.zeros(101, device="cuda", requires_grad=True)
    y, rw = torch.randint(0, 100, (50,), device="cuda"), torch.rand(50, device="cuda")
    loss = ops.fused_absorb_loss(h, W, b, y, rw, n_real=100, chunk_size=16)
    loss.backward()
    grads = [t.grad.clone() for t in (h, W, b)]
    with ops.use_reference():
        for t in (h, W, b):
            t.grad = None
        ref = ops.fused_absorb_loss(h, W, b, y, rw, n_real=100, chunk_size=16)
        ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    for a, t in zip(grads, (h, W, b)):
        torch.testing.assert_close(a, t.grad, rtol=1e-4, atol=1e-5)
