"""The compiled CPU kernels (pysedd._C) against the reference formulas: values, gradients, dtypes, odd sizes,
dispatcher conformance (opcheck), torch.compile, sampling frequencies and determinism, and the fused
output-layer loss against the unfused path."""
import math

import pytest
import torch
from scipy.stats import chisquare

import pysedd.ops as ops
from pysedd.graph import Absorbing, Uniform
from pysedd.ops import reference as R

from oracles import binned_chisquare_pvalue, realistic_step_case

pytestmark = pytest.mark.skipif(not ops.HAS_EXT, reason="pysedd._C is not built")
f64 = torch.float64
PRED = ops.PREDICTOR_CODES


def make_inputs(absorb, B, L, V, seed=0, masked=0.5, sigma_range=(0.05, 3.0), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    N = V - 1 if absorb else V
    s = (torch.randn(B, L, V, generator=g, dtype=f64) * 1.5 - 1.0).to(dtype)
    x0 = torch.randint(0, N, (B, L), generator=g)
    if absorb:
        xt = torch.where(torch.rand(B, L, generator=g) < masked, N, x0)
    else:
        xt = torch.where(torch.rand(B, L, generator=g) < 0.5, x0, torch.randint(0, N, (B, L), generator=g))
    lo, hi = sigma_range
    sigma = lo + (hi - lo) * torch.rand(B, generator=g, dtype=f64)
    return s, xt, x0, sigma


def reference64(s, xt, x0, sigma, absorb, grad_out):
    """Loss and gradient of sum(grad_out * loss) from the reference in float64 on the same (rounded) inputs."""
    s64 = s.double().requires_grad_()
    loss = R.score_entropy(s64, sigma.double(), xt, x0, absorb)
    (g,) = torch.autograd.grad((loss * grad_out.double()).sum(), s64)
    return loss.detach(), g


CASES = [  # (absorb, B, L, V): V not a multiple of 8 or 16, L = 1, a vocabulary below one vector
    (True, 3, 5, 37), (False, 3, 5, 37), (True, 2, 1, 1001), (False, 2, 1, 1001), (True, 1, 4, 5), (False, 2, 3, 7),
]


@pytest.mark.parametrize("absorb,B,L,V", CASES)
def test_forward_backward_fp32(absorb, B, L, V):
    s, xt, x0, sigma = make_inputs(absorb, B, L, V)
    graph = int(not absorb)
    grad_out = torch.randn(B, L)
    want, want_g = reference64(s, xt, x0, sigma, absorb, grad_out)
    got = torch.ops.pysedd.score_entropy_fwd(s, xt, x0, sigma, graph)
    assert got.dtype == torch.float32 and got.shape == (B, L)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    got_g = torch.ops.pysedd.score_entropy_bwd(grad_out, s, xt, x0, sigma, graph)
    torch.testing.assert_close(got_g.double(), want_g, rtol=1e-5, atol=1e-6)
    # weighted forward: scalar and its gradient from one pass
    total, g_w = torch.ops.pysedd.score_entropy_weighted(s, xt, x0, sigma, grad_out, graph)
    torch.testing.assert_close(total.double(), (want * grad_out.double()).sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_w.double(), want_g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("absorb", [True, False])
def test_bf16(absorb):
    s, xt, x0, sigma = make_inputs(absorb, 2, 6, 301, dtype=torch.bfloat16)
    grad_out = torch.rand(2, 6)
    want, want_g = reference64(s, xt, x0, sigma, absorb, grad_out)
    got = torch.ops.pysedd.score_entropy_fwd(s, xt, x0, sigma, int(not absorb))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)  # fp32 math on the bf16 values
    got_g = torch.ops.pysedd.score_entropy_bwd(grad_out, s, xt, x0, sigma, int(not absorb))
    assert got_g.dtype == torch.bfloat16
    torch.testing.assert_close(got_g.double(), want_g, rtol=1e-2, atol=1e-3)  # bf16 output rounding


def test_absorb_rows_without_mask_are_zero():
    s, xt, x0, sigma = make_inputs(True, 2, 4, 37, masked=0.0)
    s.requires_grad_()
    loss = ops.score_entropy(Absorbing(36), s, sigma, xt, x0)
    assert torch.equal(loss, torch.zeros(2, 4))
    loss.sum().backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_uniform_small_sigma_is_stable():
    # fp32 phi-form near sigma = 1e-4 (the geometric schedule's start), against float64 (docs/sedd.md#numerics)
    s, xt, x0, sigma = make_inputs(False, 4, 8, 50, sigma_range=(1e-4, 1e-3))
    want, _ = reference64(s, xt, x0, sigma, False, torch.ones(4, 8))
    got = torch.ops.pysedd.score_entropy_fwd(s, xt, x0, sigma, 1)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=0)


@pytest.mark.parametrize("absorb", [True, False])
def test_public_api_kernel_equals_graph_reference(absorb):
    s, xt, x0, sigma = make_inputs(absorb, 2, 5, 41)
    graph = Absorbing(40) if absorb else Uniform(41)
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    got = ops.score_entropy(graph, s1, sigma.float(), xt, x0)
    with ops.use_reference():
        assert not ops.kernel_available(s)
        want = ops.score_entropy(graph, s2, sigma.float(), xt, x0)
    assert ops.kernel_available(s)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    w = torch.rand(2, 5)
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-5, atol=1e-6)
    total = ops.score_entropy_weighted(graph, s, sigma.float(), xt, x0, w)
    torch.testing.assert_close(total, (want * w).sum(), rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    s, xt, x0, sigma = make_inputs(True, 2, 3, 9)
    with pytest.raises(RuntimeError, match="x0 must have shape"):
        torch.ops.pysedd.score_entropy_fwd(s, xt, x0[:, :2], sigma, 0)
    with pytest.raises(RuntimeError, match="outside the real tokens"):
        torch.ops.pysedd.score_entropy_fwd(s, xt, torch.full_like(x0, 8), sigma, 0)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        torch.ops.pysedd.score_entropy_fwd(s.half(), xt, x0, sigma, 0)
    with pytest.raises(RuntimeError, match="sigma must have shape"):
        torch.ops.pysedd.score_entropy_fwd(s, xt, x0, sigma[:1], 0)
    with pytest.raises(ValueError, match="predictor"):
        ops.reverse_step(Absorbing(8), s, xt, sigma, "ancestral")


def test_opcheck():
    opcheck = torch.library.opcheck
    for absorb, B, L, V in [(True, 2, 3, 13), (False, 2, 2, 11), (True, 1, 1, 5)]:
        s, xt, x0, sigma = make_inputs(absorb, B, L, V)
        g = int(not absorb)
        for req in (False, True):
            opcheck(torch.ops.pysedd.score_entropy_fwd.default, (s.clone().requires_grad_(req), xt, x0, sigma, g))
            opcheck(torch.ops.pysedd.score_entropy_weighted.default,
                    (s.clone().requires_grad_(req), xt, x0, sigma, torch.rand(B, L), g))
        opcheck(torch.ops.pysedd.score_entropy_bwd.default, (torch.rand(B, L), s, xt, x0, sigma, g))
        x = xt if absorb else x0
        frozen = torch.rand(B, L) < 0.3
        for pred in (0, 1, 2):
            opcheck(torch.ops.pysedd.reverse_step.default, (s, x, sigma, frozen, g, pred, 1234, 5))
        opcheck(torch.ops.pysedd.reverse_step.default, (s, x, sigma, None, g, 0, 99, 0))
    logits, x0 = torch.randn(6, 11), torch.randint(0, 10, (6,))
    opcheck(torch.ops.pysedd.absorb_raw_loss_grad_.default, (logits, x0, torch.rand(6), 10))
    h, W, b = torch.randn(7, 4), torch.randn(11, 4) * 0.3, torch.randn(11) * 0.3
    for req in (False, True):
        args = (h.clone().requires_grad_(req), W.clone().requires_grad_(req), b.clone().requires_grad_(req),
                torch.randint(0, 10, (7,)), torch.rand(7), 10, 3)
        opcheck(torch.ops.pysedd.fused_absorb_loss.default, args)


def test_compile_fullgraph_forward_backward():
    torch._dynamo.reset()
    s, xt, x0, sigma = make_inputs(True, 2, 3, 13)

    graph = Absorbing(12)

    @torch.compile(fullgraph=True, backend="inductor")
    def loss_fn(log_score, xt, x0, sigma):  # through the public API: kernel choice is traced, not a graph break
        return (ops.score_entropy(graph, log_score * 1.0, sigma, xt, x0) * 2.0).sum()

    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    loss_fn(s1, xt, x0, sigma).backward()
    (torch.ops.pysedd.score_entropy_fwd(s2, xt, x0, sigma, 0) * 2.0).sum().backward()
    torch.testing.assert_close(s1.grad, s2.grad)

    @torch.compile(fullgraph=True, backend="inductor")
    def step(log_score, x, coef):
        return torch.ops.pysedd.reverse_step(log_score.float(), x, coef, None, 0, 0, 7, 3)

    x = torch.full((2, 3), 12)
    coef = torch.full((2,), 0.2, dtype=f64)
    assert torch.equal(step(s, x, coef), torch.ops.pysedd.reverse_step(s, x, coef, None, 0, 0, 7, 3))


@pytest.mark.parametrize("absorb", [True, False])
@pytest.mark.parametrize("predictor", ["euler", "analytic", "denoise"])
def test_reverse_step_frequencies(absorb, predictor):
    """Chi-square of the kernel's draws against the reference weights (many rows of the same distribution)."""
    V, n = 9, 30000
    N = V - 1 if absorb else V
    g = torch.Generator().manual_seed(11)
    s = torch.randn(1, 1, V, generator=g, dtype=f64).float() * 1.2
    x = torch.tensor([[N if absorb else 3]])
    s[0, 0, x[0, 0]] = 0.0
    coef = torch.tensor([0.25 if predictor == "euler" else 0.6], dtype=f64)
    w = R.reverse_weights(s, x, coef, predictor, absorb)[0, 0].clamp_min(0)
    p = w / w.sum()
    draws = torch.ops.pysedd.reverse_step(s.expand(n, 1, V).contiguous(), x.expand(n, 1).contiguous(),
                                          coef.expand(n).contiguous(), None, int(not absorb), PRED[predictor], 2024, 1)
    counts = torch.bincount(draws.flatten(), minlength=V)[: p.numel()]
    assert counts[p == 0].sum() == 0
    keep = p > 0
    assert chisquare(counts[keep].numpy(), (p[keep] * n).numpy()).pvalue > 1e-4



@pytest.mark.parametrize("absorb,predictor", [(True, "euler"), (True, "analytic"), (True, "denoise"),
                                              (False, "euler"), (False, "analytic")])
def test_reverse_step_law_at_a_realistic_vocabulary(absorb, predictor):
    """V = 1537 (twelve 128-wide blocks and a ragged one): a Zipf-like head and a long tail make the kernel's
    block skip fire on most blocks; its draws must still follow the weights (chi-square, tail cells merged)."""
    n = 6000
    s, x, coef, p, N = realistic_step_case(absorb, predictor)
    V = s.shape[-1]
    draws = torch.ops.pysedd.reverse_step(s.expand(n, 1, V).contiguous(), x.expand(n, 1).contiguous(),
                                          coef.expand(n).contiguous(), None, int(not absorb), PRED[predictor], 77, 2)
    counts = torch.bincount(draws.flatten(), minlength=V)[: p.numel()].double()
    assert counts[p == 0].sum() == 0
    assert binned_chisquare_pvalue(counts, p, n) > 1e-4
    # the mass past the first block, where skipped blocks must still be drawn at their rate
    tail, got = p[128:N].sum().item(), counts[128:N].sum().item() / n
    assert tail > 0.1 and abs(got - tail) < 4 * math.sqrt(tail * (1 - tail) / n)


def test_reverse_step_determinism_and_frozen():
    s, _, x0, sigma = make_inputs(True, 3, 50, 33)
    x = torch.where(torch.rand(3, 50) < 0.7, 32, x0)
    frozen = torch.rand(3, 50) < 0.3
    coef = torch.full((3,), 0.3, dtype=f64)
    a = torch.ops.pysedd.reverse_step(s, x, coef, frozen, 0, 1, 42, 7)
    b = torch.ops.pysedd.reverse_step(s, x, coef, frozen, 0, 1, 42, 7)
    c = torch.ops.pysedd.reverse_step(s, x, coef, frozen, 0, 1, 42, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[frozen], x[frozen])
    unmasked = x != 32
    assert torch.equal(a[unmasked], x[unmasked])  # unmasking is monotone
    d = torch.ops.pysedd.reverse_step(s, x, coef, None, 0, 2, 1, 0)  # denoise: no MASK remains
    assert (d < 32).all()
    # the public API draws (seed, offset) from the generator: same generator state, same tokens
    graph = Absorbing(32)
    r1 = ops.reverse_step(graph, s, x, coef, "analytic", frozen, torch.Generator().manual_seed(5))
    r2 = ops.reverse_step(graph, s, x, coef, "analytic", frozen, torch.Generator().manual_seed(5))
    assert torch.equal(r1, r2) and torch.equal(r1[frozen], x[frozen])


def unfused_loss(h, W, b, x0, row_weight, N):
    raw = h @ W.t() + b
    bracket = raw[:, :N].exp().sum(-1) / N - raw.gather(1, x0[:, None])[:, 0] + math.log(N) - 1
    return (row_weight * bracket).sum()


@pytest.mark.parametrize("chunk_size", [1, 5, None])
@pytest.mark.parametrize("use_ref", [False, True])
def test_fused_absorb_loss_matches_unfused(chunk_size, use_ref):
    g = torch.Generator().manual_seed(3)
    n, D, V = 23, 16, 41
    h = torch.randn(n, D, generator=g, dtype=f64).float()
    W = (torch.randn(V, D, generator=g, dtype=f64) * 0.25).float()
    b = (torch.randn(V, generator=g, dtype=f64) * 0.3).float()
    x0 = torch.randint(0, V - 1, (n,), generator=g)
    rw = torch.rand(n, generator=g, dtype=f64).float()
    params = [t.clone().requires_grad_() for t in (h, W, b)]
    with ops.use_reference(use_ref):
        got = ops.fused_absorb_loss(*params, x0, rw, n_real=V - 1, chunk_size=chunk_size)
    got.backward()
    ref = [t.double().requires_grad_() for t in (h, W, b)]
    want = unfused_loss(*ref, x0, rw.double(), V - 1)
    want.backward()
    torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-5)
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.grad.double(), r.grad, rtol=1e-5, atol=1e-5)


def test_fused_training_loss_equals_unfused():
    """pysedd.losses.score_entropy_loss(fused=True) equals the unfused loss, values and parameter gradients."""
    from pysedd.config import SEDDConfig
    from pysedd.losses import score_entropy_loss
    from pysedd.model import SEDD
    from pysedd.noise import LogLinear

    torch.manual_seed(0)
    cfg = SEDDConfig.preset("tiny")
    model = SEDD(cfg).eval()
    for p in model.output_layer.parameters():  # the zero-init head would make the check trivial
        torch.nn.init.normal_(p, std=0.2)
    graph, noise = Absorbing(cfg.tokens), LogLinear()
    x0 = torch.randint(0, cfg.tokens, (3, 16))
    t = torch.tensor([0.2, 0.55, 0.9])
    xt = graph.sample_transition(x0, noise(t)[0], generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for fused in (False, True):
        model.zero_grad()
        loss = score_entropy_loss(model, graph, noise, x0, t=t, perturbed=xt, fused=fused)
        loss.mean().backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_fused_absorb_loss_bf16():
    g = torch.Generator().manual_seed(8)
    h, W, b = torch.randn(40, 16, generator=g), torch.randn(21, 16, generator=g) * 0.3, torch.randn(21, generator=g) * 0.3
    y, rw = torch.randint(0, 20, (40,), generator=g), torch.rand(40, generator=g)
    low = [t.bfloat16().requires_grad_() for t in (h, W, b)]
    ref = [t.bfloat16().float().requires_grad_() for t in (h, W, b)]
    loss = ops.fused_absorb_loss(*low, y, rw, n_real=20, chunk_size=7)
    want = ops.fused_absorb_loss(*ref, y, rw, n_real=20, chunk_size=7)
    (loss + want).backward()
    torch.testing.assert_close(loss, want, rtol=2e-3, atol=0)
    for a, r in zip(low, ref):
        assert a.grad.dtype == torch.bfloat16
        torch.testing.assert_close(a.grad.float(), r.grad, rtol=0, atol=2e-2 * r.grad.abs().max().item())


def test_token_ids_are_checked_in_the_api_layer():
    """Out-of-range ids fail before any kernel runs, as one catchable error naming the tensor (the same check runs
    for CUDA tensors, where a kernel could only assert)."""
    s, xt, x0, sigma = make_inputs(True, 2, 5, 9)
    with pytest.raises(RuntimeError, match="x0 holds ids .* outside the real tokens"):
        torch.ops.pysedd.score_entropy_fwd(s, xt, torch.full_like(x0, 8), sigma, 0)  # MASK is not a clean token
    with pytest.raises(RuntimeError, match="xt holds ids .* outside the vocabulary"):
        torch.ops.pysedd.score_entropy_weighted(s, torch.full_like(xt, 9), x0, sigma, torch.ones(2, 5), 0)
    with pytest.raises(RuntimeError, match="x holds ids .* outside the vocabulary"):
        torch.ops.pysedd.reverse_step(s, torch.full_like(xt, -1), sigma, None, 0, 1, 1, 0)
    with pytest.raises(RuntimeError, match="x0 holds ids"):
        torch.ops.pysedd.absorb_raw_loss_grad_(s[0].clone(), torch.full((5,), 8), torch.ones(5), 8)


def test_fake_kernels_check_shapes():
    """Under fake tensors (torch.compile's tracing) a mis-shaped call fails as the real kernel would."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        s, x = torch.empty(2, 5, 9), torch.zeros(2, 5, dtype=torch.int64)
        assert torch.ops.pysedd.reverse_step(s, x, torch.empty(2, dtype=f64), None, 0, 1, 1, 0).shape == (2, 5)
        with pytest.raises(Exception, match="x must have shape"):
            torch.ops.pysedd.reverse_step(s, x[:, :4], torch.empty(2, dtype=f64), None, 0, 1, 1, 0)
        with pytest.raises(Exception, match="sigma must have shape"):
            torch.ops.pysedd.score_entropy_fwd(s, x, x, torch.empty(3), 0)


def test_kernel_codes_are_the_python_table():
    """The C++ side names its predictor and graph codes in its errors: they are ops.PREDICTOR_CODES/GRAPH_CODES."""
    s, xt, _, sigma = make_inputs(True, 1, 2, 5)
    with pytest.raises(RuntimeError) as err:
        torch.ops.pysedd.reverse_step(s, xt, sigma, None, 0, 99, 1, 0)
    assert all(f"{code} ({name})" in str(err.value) for name, code in ops.PREDICTOR_CODES.items())
    with pytest.raises(RuntimeError) as err:
        torch.ops.pysedd.reverse_step(s, xt, sigma, None, 7, 0, 1, 0)
    assert all(f"{code} ({name})" in str(err.value) for name, code in ops.GRAPH_CODES.items())


def test_graph_score_entropy_takes_the_kernel():
    """Code written against the reference's API (graph.score_entropy) gets the compiled kernel for fp32 CPU input."""
    s, xt, x0, sigma = make_inputs(True, 2, 6, 9)
    got = Absorbing(8).score_entropy(s, sigma.float(), xt, x0)
    assert torch.equal(got, torch.ops.pysedd.score_entropy_fwd(s, xt, x0, sigma.float(), 0))
    with ops.use_reference():
        torch.testing.assert_close(Absorbing(8).score_entropy(s, sigma.float(), xt, x0), got, rtol=1e-5, atol=1e-5)
