"""Fake (meta) kernels and autograd formulas for the C++ ops, so they pass torch.library.opcheck and
trace under torch.compile(fullgraph=True). Backward of the forward op calls another registered op."""
import torch

from pysedd.ops.backend import HAS_EXT

if HAS_EXT:

    def _check_scores(log_score, x, name):
        # the shape rules of the C++ API layer (csrc/api/ops_api.cpp), so tracing fails where a real call would
        torch._check(log_score.dim() == 3, lambda: f"pysedd: log_score must have shape [B, L, V], got {log_score.shape}")
        torch._check(x.dim() == 2 and x.shape == log_score.shape[:2],
                     lambda: f"pysedd: {name} must have shape {tuple(log_score.shape[:2])}, got {tuple(x.shape)}")
        torch._check(x.dtype == torch.int64, lambda: f"pysedd: {name} must be int64, got {x.dtype}")

    def _check_per_batch(t, B, name):
        torch._check(t.numel() == B and (t.dim() == 1 or (t.dim() == 2 and t.shape[1] == 1)),
                     lambda: f"pysedd: {name} must have shape [B] or [B, 1] with B = {B}, got {tuple(t.shape)}")

    def _check_loss(log_score, xt, x0, sigma):
        _check_scores(log_score, xt, "xt")
        _check_scores(log_score, x0, "x0")
        _check_per_batch(sigma, log_score.shape[0], "sigma")

    @torch.library.register_fake("pysedd::score_entropy_fwd")
    def _(log_score, xt, x0, sigma, graph):
        _check_loss(log_score, xt, x0, sigma)
        return log_score.new_empty(log_score.shape[:2], dtype=torch.float32)

    @torch.library.register_fake("pysedd::score_entropy_bwd")
    def _(grad, log_score, xt, x0, sigma, graph):
        _check_loss(log_score, xt, x0, sigma)
        torch._check(grad.shape == xt.shape, lambda: f"pysedd: grad must have shape {tuple(xt.shape)}")
        return torch.empty_like(log_score, memory_format=torch.contiguous_format)

    @torch.library.register_fake("pysedd::score_entropy_weighted")
    def _(log_score, xt, x0, sigma, row_weight, graph):
        _check_loss(log_score, xt, x0, sigma)
        torch._check(row_weight.shape == xt.shape, lambda: f"pysedd: row_weight must have shape {tuple(xt.shape)}")
        loss = log_score.new_empty((), dtype=torch.float32)
        return loss, torch.empty_like(log_score, memory_format=torch.contiguous_format)

    @torch.library.register_fake("pysedd::absorb_raw_loss_grad_")
    def _(logits, x0, row_weight, n_real):
        torch._check(logits.dim() == 2, lambda: f"pysedd: logits must have shape [n, V], got {tuple(logits.shape)}")
        n = logits.shape[0]
        torch._check(x0.shape == (n,) and row_weight.shape == (n,),
                     lambda: f"pysedd: x0 and row_weight must have shape [{n}]")
        return logits.new_empty(logits.shape[:1], dtype=torch.float32)

    @torch.library.register_fake("pysedd::reverse_step")
    def _(log_score, x, coef, frozen, graph, predictor, seed, offset):
        _check_scores(log_score, x, "x")
        _check_per_batch(coef, log_score.shape[0], "coef")
        if frozen is not None:
            torch._check(frozen.dtype == torch.bool and frozen.shape == x.shape,
                         lambda: f"pysedd: frozen must be a bool tensor of shape {tuple(x.shape)}")
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _no_grad_for(ctx, names):
        for i, name in names.items():
            if ctx.needs_input_grad[i]:
                raise NotImplementedError(f"pysedd kernels give no gradient w.r.t. {name}; use the reference")

    def _se_setup(ctx, inputs, output):
        log_score, xt, x0, sigma, graph = inputs
        ctx.save_for_backward(log_score, xt, x0, sigma)
        ctx.graph = graph

    def _se_backward(ctx, grad):
        _no_grad_for(ctx, {3: "sigma"})
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        log_score, xt, x0, sigma = ctx.saved_tensors
        return torch.ops.pysedd.score_entropy_bwd(grad, log_score, xt, x0, sigma, ctx.graph), None, None, None, None

    torch.library.register_autograd("pysedd::score_entropy_fwd", _se_backward, setup_context=_se_setup)

    def _sew_setup(ctx, inputs, output):
        ctx.save_for_backward(output[1])
        ctx.set_materialize_grads(False)  # no [B, L, V] zeros for the gradient output's own (absent) grad

    def _sew_backward(ctx, grad_loss, grad_grad):
        _no_grad_for(ctx, {3: "sigma", 4: "row_weight"})
        (g,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        eager = type(grad_loss) is torch.Tensor and not torch.compiler.is_compiling()  # not fake/traced
        if eager and grad_loss.device.type == "cpu" and grad_loss.item() == 1.0:
            return g, None, None, None, None, None  # loss.backward(): the stored gradient as is, no extra pass
        grad_ls = (g * grad_loss).to(g.dtype)
        return grad_ls, None, None, None, None, None

    torch.library.register_autograd("pysedd::score_entropy_weighted", _sew_backward, setup_context=_sew_setup)
