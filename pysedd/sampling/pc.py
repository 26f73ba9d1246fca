"""Step samplers: Euler or analytic (Tweedie tau-leaping) predictor steps over linspace(1, eps, steps + 1), then the
final denoising step; any batch size, length and number of steps, float64 categorical draws, seeded.

Caching when nothing changed. SEDD is conditioned on sigma, so reusing a network output at a later time is exact only
for a network that ignores sigma. The absorbing graph's sigma dependence under `scale_by_sigma` is analytic
(log-score = network - log(e^sigma - 1) - log N), and both step predictors see the score only through coef * score
(euler: dt sigma' s_j; analytic: expm1(D) s_j, with the MASK entry 1 - that sum), so a score scaled by k is a step
with coef' = coef * k (euler) or log1p(expm1(coef) * k) (analytic, denoise). Hence:

* `cache="exact"` needs `model.time_independent = True` (a network that ignores its sigma input, e.g. a time-agnostic
  fine-tune or an MDLM-style denoiser). Such a model is then ALWAYS evaluated at sigma = ln 2 (e^sigma - 1 = 1, so
  its output is log p + const) and the time enters through coef in float64, with or without the cache: the cached
  and uncached samplers make identical draws from the same seed, and the cache only skips calls whose input is
  bit-identical to the previous call's.
* `cache="approximate"` (absorb only) reuses a time-conditioned network's output from the last call, with the exact
  analytic rescaling above; it ignores only the change of the network's own sigma conditioning since that call.
  `bench/cache_error.py` measures the error this makes.
"""
from __future__ import annotations

import math

import torch

from .. import ops
from ..errors import UserError
from ..graph import Graph
from ..noise import Noise
from ..ops import RowScores, reverse_step
from ..ops.categorical import check_categorical, sample_categorical_reference
from ..ops.reference import esigm1, reverse_weights
from .conditioning import Conditioning, clamp, resolve
from .result import EOS_ID, SampleOutput, Stopwatch, eos_lengths

PREDICTORS = tuple(p for p in ops.PREDICTOR_CODES if p != "denoise")
CACHE_MODES = ("off", "exact", "approximate")
TIME_FREE_SIGMA = math.log(2.0)  # e^sigma - 1 = 1


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def model_device(model: torch.nn.Module, device=None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


class ScoreCache:
    """Calls the network (counting NFE) and, when allowed, reuses its last output for a bit-identical input.

    Returns (log_score, k): the score to use at sigma is exp(log_score) * k ([B] float64, on the non-self entries),
    k = None meaning 1 (the output was computed at sigma itself)."""

    def __init__(self, model: torch.nn.Module, graph: Graph, mode: str = "off"):
        if mode not in CACHE_MODES:
            raise UserError(f"unknown cache mode {mode!r}; choose one of {', '.join(CACHE_MODES)}")
        self.model, self.mode = model, mode
        self.time_independent = bool(getattr(model, "time_independent", False))
        self.scaled = graph.absorb and bool(getattr(model, "scale_by_sigma", False))
        if mode == "exact" and not self.time_independent:
            raise UserError("cache='exact' needs a model that ignores sigma (model.time_independent = True); SEDD "
                            "checkpoints are conditioned on sigma: use cache='approximate' (absorb) or 'off'")
        if mode == "approximate" and not graph.absorb:
            raise UserError("cache='approximate' is only defined for the absorbing graph")
        if (self.time_independent or mode == "approximate") and graph.absorb and not self.scaled:
            raise UserError("caching on the absorbing graph needs model.scale_by_sigma = True (a log-score of the "
                            "form network - log(e^sigma - 1) - log N)")
        # absorb: project only the masked positions through the output layer and step them in Python, unless the
        # compiled CUDA kernel is there. On CPU this beats the CPU kernel on the full [B, L, V] output (tiny SEDD,
        # B=2, L=64, 32 steps: 2.24 s vs 4.00 s), because the skipped output projection dominates the step.
        device = model_device(model)
        self.rows_only = graph.absorb and hasattr(model, "hidden_states") and hasattr(model, "head") and \
            not (device.type == "cuda" and ops.kernel_available(torch.empty(0, device=device)))
        self.mask_index = graph.mask_index if graph.absorb else None
        self.nfe = self.hits = 0
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (x, log_score, sigma_eval)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        sigma_eval = torch.full_like(sigma, TIME_FREE_SIGMA) if self.time_independent else sigma
        if self.mode != "off" and self._last is not None and torch.equal(self._last[0], x):
            self.hits += 1
            _, log_score, sigma_eval = self._last
        else:
            log_score = self._evaluate(x, sigma_eval.float())
            self.nfe += 1
            if self.mode != "off":
                self._last = (x.clone(), log_score, sigma_eval)
        if sigma_eval is sigma or not self.scaled:
            return log_score, None
        return log_score, esigm1(sigma_eval) / esigm1(sigma)

    def _evaluate(self, x: torch.Tensor, sigma: torch.Tensor):
        if not self.rows_only:
            return self.model(x, sigma)
        rows = (x == self.mask_index).nonzero(as_tuple=True)
        h = self.model.hidden_states(x, sigma)[rows]
        return RowScores(rows, self.model.head(h[:, None], x[rows][:, None], sigma[rows[0]])[:, 0])


def rescale_coef(coef: torch.Tensor, k: torch.Tensor | None, predictor: str) -> torch.Tensor:
    """The step coefficient that gives the same weights for score * k as coef gives for score (absorb)."""
    if k is None:
        return coef
    return coef * k if predictor == "euler" else torch.log1p(torch.expm1(coef) * k)


@torch.no_grad()
def pc_sample(
    model: torch.nn.Module,
    graph: Graph | None,
    noise: Noise | None,
    batch_size: int,
    length: int,
    steps: int,
    predictor: str = "analytic",
    denoise: bool = True,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    device=None,
    *,
    conditioning: Conditioning | None = None,
    cache: str = "off",
    trim_eos: bool = False,
    eos_id: int = EOS_ID,
    seed: int | None = None,
    categorical: str = "float64",
) -> SampleOutput:
    """Draw [batch_size, length] ids; `conditioning` fixes any positions; `trim_eos` sets lengths at the first EOS.

    categorical="float64" (default) draws every step from its exact law; "reference" runs the official sampler's
    loop instead (its float32 grid, full-tensor float32 Gumbel draws, every step and call): see `_reference_loop`."""
    check_categorical(categorical)
    if graph is None or noise is None:  # None: the model's own (model.config)
        graph, noise = model.graph_and_noise(graph, noise)
    if predictor not in PREDICTORS:
        raise UserError(f"unknown predictor {predictor!r}; choose one of {', '.join(PREDICTORS)}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("length", length)):
        check_positive_int(name, value)
    if not 0.0 < eps < 1.0:
        raise UserError(f"eps must lie in (0, 1), got {eps}")
    device = model_device(model, device)
    if categorical == "reference":
        if cache != "off":
            raise UserError("categorical='reference' reproduces the official sampler, which has no cache: use cache='off'")
        return _reference_loop(model, graph, noise, batch_size, length, steps, predictor, denoise, eps, generator,
                               device, conditioning, trim_eos, eos_id, seed)
    if generator is None and seed is not None:
        generator = torch.Generator(device).manual_seed(seed)
    model.eval()
    scorer = ScoreCache(model, graph, cache)
    fixed, values = resolve(conditioning, batch_size, length, graph.n_tokens, device)
    clock = Stopwatch(device)

    if graph.absorb:
        x = graph.sample_limit(batch_size, length, device=device)
    else:
        x = graph.sample_limit(batch_size, length, device=device, generator=generator)
    timesteps = torch.linspace(1.0, eps, steps + 1, dtype=torch.float64, device=device)
    dt = (1.0 - eps) / steps
    for i in range(steps):
        x = clamp(x, fixed, values)
        if graph.absorb and not bool((x == graph.mask_index).any()):
            break  # nothing left to unmask: the remaining steps, and their network calls, would change nothing
        t = timesteps[i].expand(batch_size)
        sigma, rate = noise(t)
        if predictor == "euler":
            coef = dt * rate
        else:
            coef = sigma - noise.total_noise((t - dt).clamp_min(0.0))
        log_score, k = scorer(x, sigma)
        x = reverse_step(graph, log_score, x, rescale_coef(coef, k, predictor), predictor, fixed, generator)
    if denoise and not (graph.absorb and not bool((x == graph.mask_index).any())):
        x = clamp(x, fixed, values)
        sigma = noise.total_noise(timesteps[-1].expand(batch_size))
        log_score, k = scorer(x, sigma)
        x = reverse_step(graph, log_score, x, rescale_coef(sigma, k, "denoise"), "denoise", fixed, generator)
    x = clamp(x, fixed, values)

    wall = clock.stop()
    n_fixed = 0 if fixed is None else int(fixed.sum())
    return SampleOutput(
        samples=x, nfe=scorer.nfe, tokens=batch_size * length - n_fixed, wall_time=wall, sampler=predictor,
        steps=steps, cache_hits=scorer.hits, lengths=eos_lengths(x, eos_id, fixed) if trim_eos else None,
        extra=dict(cache=cache, eps=eps, denoise=denoise, categorical=categorical),
    )


def _reference_loop(model, graph, noise, batch_size, length, steps, predictor, denoise, eps, generator, device,
                    conditioning, trim_eos, eos_id, seed) -> SampleOutput:
    """The official `get_pc_sampler` loop, so that the same seed gives the same ids on CPU (docs/sampling.md).

    Its time grid is linspace(1, eps, steps + 1) in float32 with sigma computed in float32; the network is called at
    every step (also once nothing is masked) and at the denoiser; the weights cover every position and come from
    `reverse_weights` in the network's dtype; each step draws one uniform per entry of the full weight tensor.
    Randomness: the uniform graph's random start from a CPU generator, then the draws on `device`; `seed` seeds
    both (as torch.manual_seed does), `generator` is used where it lives, and with neither, torch's global
    generators are used, exactly as the official code does. Conditioning is clamped before every step, before the
    denoiser and in the output, as its `proj_fun`."""
    cpu_gen = gen = generator
    if generator is None and seed is not None:
        cpu_gen = torch.Generator().manual_seed(seed)
        gen = cpu_gen if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
    elif generator is not None and generator.device.type != "cpu":
        cpu_gen = None
    model.eval()
    fixed, values = resolve(conditioning, batch_size, length, graph.n_tokens, device)
    clock = Stopwatch(device)

    if graph.absorb:
        x = graph.sample_limit(batch_size, length).to(device)
    else:
        x = graph.sample_limit(batch_size, length, generator=cpu_gen).to(device)
    timesteps = torch.linspace(1, eps, steps + 1, device=device)
    dt = (1 - eps) / steps
    nfe = 0

    def step(x, t, kind):
        if kind == "euler":
            sigma, rate = noise.in_dtype(t)
            coef = dt * rate
        else:
            sigma = noise.in_dtype(t)[0]
            coef = sigma if kind == "denoise" else sigma - noise.in_dtype(t - dt)[0]
        log_score = model(x, sigma.reshape(-1))
        weights = reverse_weights(log_score, x, coef, kind, graph.absorb, reference=True)
        return sample_categorical_reference(weights, gen)

    for i in range(steps):
        x = clamp(x, fixed, values)
        x = step(x, timesteps[i] * torch.ones(batch_size, 1, device=device), predictor)
        nfe += 1
    if denoise:
        x = clamp(x, fixed, values)
        x = step(x, timesteps[-1] * torch.ones(batch_size, 1, device=device), "denoise")
        nfe += 1
    x = clamp(x, fixed, values)

    wall = clock.stop()
    n_fixed = 0 if fixed is None else int(fixed.sum())
    return SampleOutput(
        samples=x, nfe=nfe, tokens=batch_size * length - n_fixed, wall_time=wall, sampler=predictor, steps=steps,
        lengths=eos_lengths(x, eos_id, fixed) if trim_eos else None,
        extra=dict(cache="off", eps=eps, denoise=denoise, categorical="reference"),
    )
