"""Fused output layer + absorb score entropy (docs/kernels.md#fused-output-layer, after Liger-Kernel's
fused linear cross entropy).

Only the masked rows' final hidden states come in. Rows are processed in chunks: logits = h_c W^T + b, then one
pass turns them in place into their gradient while summing the loss, and the grads of h, W and b are
accumulated right away. So [n, V] logits never exist at once, and backward only scales the stored grads."""
import math

import torch

from pysedd.ops import backend
from pysedd.ops import reference


def default_chunk_size(n: int, V: int, D: int) -> int:
    """Liger's rule, chunk logits about as large as h (next power of two of n / ceil(V/D)), but at least 256 rows:
    each chunk re-reads W and re-writes grad_W ([V, D] each), which thinner chunks make the bottleneck on CPU."""
    rows = max(256, math.ceil(n / math.ceil(V / D)))
    return 1 << (rows - 1).bit_length()


@torch.library.custom_op("pysedd::fused_absorb_loss", mutates_args=())
def _fused_absorb_loss(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, x0: torch.Tensor,
                       row_weight: torch.Tensor, n_real: int, chunk_size: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n = h.shape[0]
    row_losses = torch.empty(n, dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h)
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
    grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=h.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        h_c = h[start:stop]
        logits = torch.addmm(bias.to(h.dtype), h_c, weight.t().to(h.dtype))
        if backend.kernel_available(logits):
            rows = torch.ops.pysedd.absorb_raw_loss_grad_(logits, x0[start:stop], row_weight[start:stop], n_real)
        else:
            rows = reference.absorb_raw_loss_grad_(logits, x0[start:stop], row_weight[start:stop], n_real)
        row_losses[start:stop] = rows
        torch.mm(logits, weight.to(h.dtype), out=grad_h[start:stop])
        if logits.dtype == torch.float32:
            grad_w.addmm_(logits.t(), h_c.float())
        else:
            grad_w += (logits.t() @ h_c).float()
        grad_b += logits.sum(0, dtype=torch.float32)
    return row_losses.sum(), row_losses, grad_h, grad_w.to(weight.dtype), grad_b.to(bias.dtype)


@_fused_absorb_loss.register_fake
def _(h, weight, bias, x0, row_weight, n_real, chunk_size):
    rows = h.new_empty(h.shape[:1], dtype=torch.float32)
    return rows.sum(), rows, torch.empty_like(h), torch.empty_like(weight), torch.empty_like(bias)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*output[2:])
    ctx.set_materialize_grads(False)  # the row losses and stored grads get no gradient: no zero tensors for them


def _backward(ctx, grad_loss, *_unused):  # the row losses and stored grads are not differentiated
    grad_h, grad_w, grad_b = ctx.saved_tensors
    need = ctx.needs_input_grad
    if need[4]:
        raise NotImplementedError("fused_absorb_loss gives no gradient w.r.t. row_weight")
    eager = type(grad_loss) is torch.Tensor and not torch.compiler.is_compiling()  # not fake/traced
    if not (eager and grad_loss.device.type == "cpu" and grad_loss.item() == 1.0):  # loss.backward(): no rescale pass
        grad_h, grad_w, grad_b = grad_h * grad_loss, grad_w * grad_loss, grad_b * grad_loss
    return (grad_h if need[0] else None, grad_w if need[1] else None, grad_b if need[2] else None,
            None, None, None, None)


_fused_absorb_loss.register_autograd(_backward, setup_context=_setup)


def fused_absorb_loss(h, weight, bias, x0, row_weight, *, n_real, chunk_size=None, return_rows=False):
    """sum_i row_weight[i] * [(1/N) sum_{y<N} e^{raw_iy} - raw_{i,x0_i} + log N - 1], raw = h W^T + b (scalar fp32).

    h [n, D]: final hidden states of the masked rows only; weight [V, D], bias [V] (V = n_real + 1, the MASK
    column is ignored); x0 [n] clean tokens; row_weight [n], e.g. sigma'/e_sigma / batch. Under scale_by_sigma
    this is sum_i row_weight[i] * e_sigma * score_entropy_i (docs/sedd.md#score-entropy). return_rows=True also
    returns the per-row weighted losses [n] (values only; the gradient flows through the scalar)."""
    if h.dim() != 2 or weight.dim() != 2 or h.shape[1] != weight.shape[1]:
        raise ValueError(f"h must be [n, D] and weight [V, D], got {tuple(h.shape)} and {tuple(weight.shape)}")
    if bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
    if x0.shape != h.shape[:1] or row_weight.shape != h.shape[:1]:
        raise ValueError(f"x0 and row_weight must have shape [{h.shape[0]}], got {tuple(x0.shape)}, "
                         f"{tuple(row_weight.shape)}")
    if not 1 <= n_real < weight.shape[0] + 1:
        raise ValueError(f"n_real must be in [1, V={weight.shape[0]}], got {n_real}")
    if chunk_size is None:
        chunk_size = default_chunk_size(h.shape[0], weight.shape[0], weight.shape[1])
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    total, rows, *_ = _fused_absorb_loss(h, weight, bias, x0.long(), row_weight, int(n_real), int(chunk_size))
    return (total, rows.detach()) if return_rows else total
