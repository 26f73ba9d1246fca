"""Public reverse-step API: one sampling iteration over all positions, kernel or reference."""
import torch

import pysedd.ops as ops
from pysedd.ops import reference
from pysedd.ops.categorical import sample_categorical

PREDICTORS = {"euler": 0, "analytic": 1, "denoise": 2}


def reverse_step(graph, log_score, x, coef, predictor, frozen=None, generator=None) -> torch.Tensor:
    """Next tokens [B, L] (int64) drawn from the predictor's weights at current tokens x [B, L].

    log_score [B, L, V]: model output (self-entry zeroed). coef [B] (float64): dt*sigma'(t) for "euler",
    sigma(t) - sigma(t - dt) for "analytic", sigma(eps) for "denoise". frozen [B, L] bool: positions kept
    as they are (conditioning). Randomness comes from `generator` (a seed and a Philox offset for the
    kernel, float64 uniforms for the reference); the draw is exact in float64 in both."""
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {sorted(PREDICTORS)}, got {predictor!r}")
    if x.shape != log_score.shape[:-1]:
        raise ValueError(f"x has shape {tuple(x.shape)} but log_score has {tuple(log_score.shape)}")
    if frozen is not None and (frozen.dtype != torch.bool or frozen.shape != x.shape):
        raise ValueError(f"frozen must be a bool tensor of shape {tuple(x.shape)}")
    if ops.kernel_available(log_score) and log_score.dim() == 3:
        device = generator.device if generator is not None else "cpu"
        seed, offset = torch.randint(0, 2**62, (2,), generator=generator, device=device).tolist()
        return torch.ops.pysedd.reverse_step(log_score, x.long(), coef, frozen, 0 if graph.absorb else 1,
                                             PREDICTORS[predictor], seed, offset % 2**32)
    weights = reference.reverse_weights(log_score.double(), x, coef.double(), predictor, graph.absorb)
    new = sample_categorical(weights, generator)
    if graph.absorb:  # unmasked tokens never move (their weights are one-hot anyway, unless a score overflowed)
        frozen = (x != graph.dim - 1) if frozen is None else frozen | (x != graph.dim - 1)
    return new if frozen is None else torch.where(frozen, x, new)
