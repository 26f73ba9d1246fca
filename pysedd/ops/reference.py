"""The one PyTorch statement of SEDD's maths: e^sigma - 1, the score entropy, the reverse-step weights and the fused
output-layer row step. They are the spec the C++/CUDA kernels are tested against and the fallback where no kernel
runs (docs/sampling.md). They work in the input's precision (score entropy: bf16 is upcast to fp32, fp64 stays
fp64) and materialise [B, L, V] intermediates freely: clarity over speed."""
import math

import torch


def esigm1(sigma: torch.Tensor) -> torch.Tensor:
    """e^sigma - 1 (expm1 below 0.5, as in the reference code)."""
    return torch.where(sigma < 0.5, torch.expm1(sigma), torch.exp(sigma) - 1)


def phi(u: torch.Tensor) -> torch.Tensor:
    """phi(u) = e^u - 1 - u >= 0, the score-entropy summand without cancellation."""
    return torch.expm1(u) - u


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def score_entropy(log_score, sigma, xt, x0, absorb: bool) -> torch.Tensor:
    """Per-position score entropy [B, L] (float32, or float64 for float64 input) in the stable phi-form.

    absorb (V = N + 1, MASK = N): l = sum_{y<N, y!=x0} e^{s_y} + r*phi(s_x0 - log r), r = 1/e, at masked
    positions and 0 elsewhere. uniform (V = N): l = (1/N) sum_{y!=x} r_y*phi(s_y - log r_y) with
    r_y = e/(e+N) when x = x0, otherwise r_x0 = 1 + N/e and r_y = 1."""
    s = log_score.to(_work_dtype(log_score))
    V = s.shape[-1]
    e = esigm1(sigma.reshape(-1).to(s.dtype))[:, None]
    s_x0 = s.gather(-1, x0[..., None]).squeeze(-1)
    if absorb:
        N = V - 1
        rest = s[..., :N].exp().scatter(-1, x0[..., None], 0.0).sum(-1)
        r = 1.0 / e
        loss = rest + r * phi(s_x0 - torch.log(r))
        return torch.where(xt == N, loss, torch.zeros_like(loss))
    N = V
    same = (xt == x0)[..., None]
    r = torch.where(same, e[..., None] / (e[..., None] + N), torch.ones_like(s))
    r_x0 = torch.where(same.squeeze(-1), r[..., 0], 1.0 + N / e)
    r = r.scatter(-1, x0[..., None], r_x0[..., None])
    terms = (r * phi(s - torch.log(r))).scatter(-1, xt[..., None], 0.0)
    return terms.sum(-1) / N


def reverse_weights(log_score, x, coef, predictor: str, absorb: bool, reference: bool = False) -> torch.Tensor:
    """Transition weights [B, L, V] (absorb denoise: [B, L, N], MASK dropped) of one reverse step, in the dtype of
    log_score (pass float64 for the exact sampler).

    score = exp(log_score) with the self-entry at 1 (the model zeroes its log). coef [B] or [B, 1]: dt*sigma'(t)
    for euler (onehot(x) + coef * reverse_rate(x, score)), sigma(t) - sigma(t - dt) for analytic and sigma(eps)
    for denoise (Tweedie: exp(-coef Q) score * row x of exp(coef Q)). The operations, their order and the dtypes
    are the official sampler's, so that float32 input gives its weights bit for bit (categorical="reference");
    reference=True also builds the uniform graph's 1/N tables in torch's default dtype, as it does. coef keeps its
    own dtype, as the official float32 time grid does. Weights may be unnormalised or negative (a too-large Euler
    step); negative weights never win the categorical race."""
    score = log_score.exp()
    V = score.shape[-1]
    c = coef.reshape(-1, 1)  # [B, 1], like the official t-shaped sigma
    onehot = torch.nn.functional.one_hot(x, V)
    table = torch.get_default_dtype() if reference else score.dtype
    if predictor == "euler":
        if absorb:  # row x of Q: 1 off the diagonal for x = MASK, -1 at x otherwise
            edge = -onehot
            edge[x == V - 1] += 1
        else:
            edge = (torch.ones(*x.shape, V, dtype=table, device=x.device) / V).scatter(-1, x[..., None], -(V - 1) / V)
        rate = edge * score
        rate = rate.scatter(-1, x[..., None], 0.0)
        rate = rate.scatter(-1, x[..., None], -rate.sum(dim=-1, keepdim=True))
        rate = c[..., None] * rate
        return onehot.to(rate) + rate
    if predictor not in ("analytic", "denoise"):
        raise ValueError(f"unknown predictor {predictor!r}")
    if absorb:
        stag = score.clone()
        extra = (1 - c.exp()) * score.sum(dim=-1)
        stag *= c.exp()[:, None]
        stag[..., -1] += extra
        edge = (-c[..., None]).exp() * onehot
        edge += torch.where(x == V - 1, 1 - (-c).exp(), 0)[..., None]
        w = stag * edge
        return w[..., :-1] if predictor == "denoise" else w
    epow = (-c).exp()[..., None]
    stag = ((epow - 1) / (V * epow)) * score.sum(dim=-1, keepdim=True) + score / epow
    trans = torch.ones(*x.shape, V, dtype=table, device=x.device) * (1 - (-c[..., None]).exp()) / V
    trans = trans.scatter(-1, x[..., None], torch.zeros_like(trans))
    trans = trans.scatter(-1, x[..., None], 1 - trans.sum(dim=-1, keepdim=True))
    return stag * trans


def absorb_raw_loss_grad_(logits, x0, row_weight, n_real: int) -> torch.Tensor:
    """Fused-output-layer row step (absorb, raw logits under scale_by_sigma): returns the per-row loss
    w*[(1/N) sum_{y<N} e^{raw_y} - raw_x0 + log N - 1] (fp32) and overwrites logits with its gradient
    w*(e^{raw_y}/N - [y = x0]) (0 in the MASK column)."""
    N = n_real
    z = logits.float()
    w = row_weight.float()[:, None]
    raw_x0 = z.gather(-1, x0[:, None])
    ez = z[:, :N].exp()
    rest = ez.scatter(-1, x0[:, None], 0.0).sum(-1, keepdim=True) / N
    loss = w * (rest + phi(raw_x0 - math.log(N)))
    grad = torch.zeros_like(z)
    grad[:, :N] = w * ez / N
    grad.scatter_add_(-1, x0[:, None], -w.expand_as(raw_x0))
    logits.copy_(grad)
    return loss.squeeze(-1)
