"""The predictor loop of the reference sampler: Euler or analytic steps over linspace(1, eps, steps + 1), then denoise."""
from __future__ import annotations

import torch

from ..errors import UserError
from ..graph import Graph
from ..noise import Noise
from .weights import analytic_probs, denoise_probs, euler_probs, sample_categorical

PREDICTORS = {"euler": euler_probs, "analytic": analytic_probs}


@torch.no_grad()
def pc_sample(
    model: torch.nn.Module,
    graph: Graph,
    noise: Noise,
    batch_size: int,
    length: int,
    steps: int,
    predictor: str = "analytic",
    denoise: bool = True,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    device=None,
) -> torch.Tensor:
    """Draw [batch_size, length] token ids from the reverse process."""
    if predictor not in PREDICTORS:
        raise UserError(f"unknown predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")
    if steps < 1 or batch_size < 1 or length < 1:
        raise UserError(f"steps, batch_size and length must be >= 1, got {steps}, {batch_size}, {length}")
    device = device or next(model.parameters()).device
    model.eval()
    step_probs = PREDICTORS[predictor]
    x = graph.sample_limit(batch_size, length, device=device)
    timesteps = torch.linspace(1, eps, steps + 1, dtype=torch.float64, device=device)
    dt = (1 - eps) / steps
    for i in range(steps):
        t = timesteps[i].expand(batch_size)
        score = model(x, noise.total_noise(t).float()).float().exp()
        x = sample_categorical(step_probs(graph, noise, score, x, t, dt), generator)
    if denoise:
        t = timesteps[-1].expand(batch_size)
        score = model(x, noise.total_noise(t).float()).float().exp()
        x = sample_categorical(denoise_probs(graph, noise, score, x, t), generator)
    return x
