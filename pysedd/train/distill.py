"""Self-distillation through time (SDTT, Deschenaux & Gulcehre 2025) for SEDD's absorbing graph.

Round r trains a student, initialised from its teacher, so that ONE analytic step of the student from t to t - 2Δ
matches the distribution the teacher reaches in TWO analytic steps of Δ, on the positions masked at t, for t on the
student's sampling grid. The round's student becomes the next round's teacher and the step count halves each round.
It runs on the ordinary trainer (EMA, checkpoints, resume, DDP, metrics): `DistillObjective` is just another
objective module ``forward(x0) -> per-sequence loss``. The maths, what is exact and what is approximated, is in
docs/distillation.md.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pysedd.errors import UserError
from pysedd.io import atomic_write_text

DIVERGENCES = ("reverse_kl", "kl", "tv")
SAMPLING_EPS = 1e-5  # the end of pc_sample's time grid: linspace(1, eps, steps + 1)
MAX_UNMASK = 1.0 - 1e-7  # a student step that unmasks everything has log(0) mask mass; keep it finite


def unmask_probability(noise, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """π(t → s) = (e^{σ(t) - σ(s)} - 1) / (e^{σ(t)} - 1): the chance that a position masked at t is unmasked at s by
    the analytic step with normalised scores (loglinear: (t - s) / t). float64."""
    sig_t, sig_s = noise.total_noise(t.double()), noise.total_noise(s.double())
    return torch.expm1(sig_t - sig_s) / torch.expm1(sig_t)


def denoiser(log_score: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """log p(x0 = j | x_t), j < N: the log-scores normalised over the real tokens (for the absorbing graph with
    scale_by_sigma the shift by log(e^σ - 1) + log N cancels)."""
    return torch.log_softmax(log_score[..., :n_tokens].float(), dim=-1)


@torch.no_grad()
def two_step_target(teacher: nn.Module, graph, noise, x_t: torch.Tensor, t: torch.Tensor, delta: float,
                    generator: torch.Generator | None = None, x_mid: torch.Tensor | None = None):
    """The teacher's two analytic steps t → t - Δ → t - 2Δ from x_t, per masked position.

    Returns (rows, log_target, pi2, weight): rows = (batch, position) of the positions masked at t AND still masked
    after the first step; log_target [n, N] = log[(π1 p1 + (1 - π1) π2' p2(x_mid)) / π12] (the token part of the
    two-step distribution, whose mask mass is exactly 1 - π12); pi2 [n] = π12; weight [n] = 1 / (1 - π1), which makes
    the sum over these rows an unbiased estimate of the sum over every position masked at t. ``x_mid`` (the state
    after step one) is drawn unless given (tests enumerate it).
    """
    from pysedd.ops import sample_categorical

    mask, n_tokens = graph.mask_index, graph.n_tokens
    t = t.double()
    s1, s2 = (t - delta).clamp_min(0.0), (t - 2 * delta).clamp_min(0.0)
    pi1, pi12 = unmask_probability(noise, t, s1), unmask_probability(noise, t, s2)
    logp1 = denoiser(teacher(x_t, noise.total_noise(t).float()), n_tokens)
    masked = x_t == mask
    if x_mid is None:
        u = torch.rand(x_t.shape, dtype=torch.float64, device=x_t.device, generator=generator)
        move = masked & (u < pi1[:, None])
        x_mid = x_t.clone()
        x_mid[move] = sample_categorical(logp1[move].double().exp(), generator)
    logp2 = denoiser(teacher(x_mid, noise.total_noise(s1).float()), n_tokens)
    rows = (masked & (x_mid == mask)).nonzero(as_tuple=True)
    b = rows[0]
    w1 = (pi1 / pi12)[b].float()[:, None]  # step one's share of the tokens unmasked by t - 2Δ
    log_target = torch.logaddexp(w1.log() + logp1[rows], torch.log1p(-w1) + logp2[rows])
    return rows, log_target, pi12[b], (1.0 / (1.0 - pi1))[b]


def student_step(log_score: torch.Tensor, n_tokens: int, dsigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log a [n], log p_s [n, N]) of one analytic student step of total noise dsigma from masked rows' log-scores
    [n, V]: the step unmasks with probability a = min((e^dsigma - 1) Σ_j s_j, 1) (what pc_sample's analytic step does
    with these scores) and then draws j from p_s = the normalised scores."""
    real = log_score[..., :n_tokens].float()
    log_a = (torch.log(torch.expm1(dsigma.double())) + torch.logsumexp(real, -1).double())
    return log_a.clamp_max(torch.log(torch.tensor(MAX_UNMASK, dtype=torch.float64))), torch.log_softmax(real, -1)


def step_divergence(log_a: torch.Tensor, log_ps: torch.Tensor, pi: torch.Tensor, log_target: torch.Tensor,
                    kind: str = "reverse_kl") -> torch.Tensor:
    """Divergence [n] between the student's step distribution over V ∪ {MASK}, (a p_s, 1 - a), and the teacher's
    two-step one, (π p̄, 1 - π): reverse_kl = KL(student ‖ teacher), kl = KL(teacher ‖ student), tv = total variation.

    Split into the mask/unmask part (float64, [n]) and a times the token part (float32, [n, N])."""
    a, pi = log_a.exp(), pi.double()
    log_pi, log_1a, log_1pi = pi.log(), torch.log1p(-a), torch.log1p(-pi)
    if kind == "reverse_kl":
        binary = a * (log_a - log_pi) + (1 - a) * (log_1a - log_1pi)
        tokens = (log_ps.exp() * (log_ps - log_target)).sum(-1).double()
        return binary + a * tokens
    if kind == "kl":
        binary = pi * (log_pi - log_a) + (1 - pi) * (log_1pi - log_1a)
        tokens = (log_target.exp() * (log_target - log_ps)).sum(-1).double()
        return binary + pi * tokens
    if kind == "tv":
        unmasked = (a.float()[:, None] * log_ps.exp() - pi.float()[:, None] * log_target.exp()).abs().sum(-1)
        return 0.5 * ((a - pi).abs() + unmasked.double())
    raise UserError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")


def student_grid_time(k: torch.Tensor, student_steps: int, eps: float = SAMPLING_EPS) -> torch.Tensor:
    """t_k = 1 - k (1 - eps) / student_steps: the start of the student's k-th step on pc_sample's grid (float64)."""
    return 1.0 - k.double() * (1.0 - eps) / student_steps


class DistillObjective(nn.Module):
    """forward(x0) -> per-sequence distillation loss [B]: Σ over masked positions of divergence(student one step of
    2Δ, teacher two steps of Δ), Δ = (1 - eps) / teacher_steps, t uniform over the student's grid, x_t ~ q(x_t | x0).

    `model` is the student (the trainer optimises, averages and exports it); the teacher is frozen in eval mode."""

    def __init__(self, student, teacher, graph, noise, teacher_steps: int, divergence: str = "reverse_kl",
                 eps: float = SAMPLING_EPS):
        super().__init__()
        if divergence not in DIVERGENCES:
            raise UserError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
        if not (graph.absorb and getattr(teacher, "scale_by_sigma", False)):
            raise UserError("distillation needs an absorbing-graph SEDD with scale_by_sigma (the teacher's "
                            "normalised scores are its denoiser)")
        if teacher_steps < 2 or teacher_steps % 2:
            raise UserError(f"the teacher's step count must be even and >= 2, got {teacher_steps}")
        self.model, self.teacher, self.graph, self.noise = student, teacher.eval().requires_grad_(False), graph, noise
        self.teacher_steps, self.divergence, self.eps = teacher_steps, divergence, eps
        self.delta = (1.0 - eps) / teacher_steps

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # no dropout in the targets
        return self

    def forward(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        B, N = x0.shape[0], self.graph.n_tokens
        k = torch.randint(0, self.teacher_steps // 2, (B,), device=x0.device, generator=generator)
        t = student_grid_time(k, self.teacher_steps // 2, self.eps)
        sigma = self.noise.total_noise(t)
        x_t = self.graph.sample_transition(x0, sigma, generator=generator)
        rows, log_target, pi12, weight = two_step_target(self.teacher, self.graph, self.noise, x_t, t, self.delta,
                                                         generator)
        dsigma = (sigma - self.noise.total_noise((t - 2 * self.delta).clamp_min(0.0)))[rows[0]]
        log_a, log_ps = student_step(self.model(x_t, sigma.float())[rows], N, dsigma)
        div = step_divergence(log_a, log_ps, pi12, log_target, self.divergence) * weight
        return torch.zeros(B, dtype=torch.float64, device=x0.device).index_add(0, rows[0], div).float()

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)


@torch.no_grad()
def heldout_divergence(student, teacher, x0: torch.Tensor, teacher_steps: int, divergence: str = "reverse_kl",
                       seed: int = 0, batch_size: int = 8) -> float:
    """Mean per-sequence divergence between `student`'s one step of 2Δ and `teacher`'s two steps of Δ on held-out
    sequences x0 [n, L], with seeded times, noising and teacher draws, so that two students (e.g. a distilled one and
    the teacher itself taking the big step) are scored on exactly the same x_t and targets."""
    from pysedd.graph import get_graph
    from pysedd.noise import get_noise

    graph, noise = get_graph(teacher.config.graph.type, teacher.config.tokens), get_noise(teacher.config.noise)
    objective = DistillObjective(student, teacher, graph, noise, teacher_steps, divergence).eval()
    total = 0.0
    for i in range(0, x0.shape[0], batch_size):
        generator = torch.Generator(x0.device).manual_seed(seed + i)
        total += float(objective(x0[i:i + batch_size], generator=generator).sum())
    return total / x0.shape[0]


# ---------------------------------------------------------------------------------------------------------------
# rounds


@dataclass
class DistillConfig:
    teacher: str = ""  # directory or hub id of the round-0 teacher (an absorbing-graph SEDD)
    rounds: int = 1
    steps: int = 1024  # the round-0 teacher's sampling steps; round r's student samples with steps / 2^(r+1)
    divergence: str = "reverse_kl"
    eps: float = SAMPLING_EPS

    def validate(self) -> None:
        if not self.teacher:
            raise UserError("no teacher: pass --teacher DIR_OR_HUB_ID (an absorbing-graph SEDD)")
        if self.rounds < 1:
            raise UserError(f"rounds must be at least 1, got {self.rounds}")
        if self.steps < 2 or self.steps % (2 ** self.rounds):
            raise UserError(f"steps {self.steps} must be divisible by 2^rounds = {2 ** self.rounds}")
        if self.divergence not in DIVERGENCES:
            raise UserError(f"unknown divergence {self.divergence!r}; choose one of {', '.join(DIVERGENCES)}")
        if not 0.0 < self.eps < 1.0:
            raise UserError(f"eps must lie in (0, 1), got {self.eps}")


def round_dir(out: str | Path, r: int) -> Path:
    return Path(out) / f"round-{r}"


def distill(cfg: DistillConfig, train_cfg) -> int:
    """Runs the rounds (skipping finished ones); each round's run directory is RUN/round-r with the trainer's
    checkpoints, metrics.jsonl and export/ (the student, loadable with SEDD.from_pretrained, plus distill.json).
    Returns the trainer's exit code (75 when preempted: run again to resume)."""
    from pysedd.graph import get_graph
    from pysedd.model import SEDD
    from pysedd.noise import get_noise
    from pysedd.train.trainer import Trainer

    cfg.validate()
    teacher_path = cfg.teacher
    summary = []
    for r in range(cfg.rounds):
        out = round_dir(train_cfg.out, r)
        teacher_steps = cfg.steps // 2 ** r
        record = dict(round=r, teacher=str(teacher_path), teacher_steps=teacher_steps,
                      student_steps=teacher_steps // 2, divergence=cfg.divergence, eps=cfg.eps,
                      train=dataclasses.replace(train_cfg, out=str(out)).to_dict())
        marker = out / "export" / "distill.json"
        settings = out / "distill-settings.json"
        if settings.exists() and json.loads(settings.read_text()) != record:
            raise UserError(f"{out} was written with other distillation settings; use a new --out")
        if not marker.exists():
            def build(tc, seq_len, teacher_path=teacher_path, teacher_steps=teacher_steps):
                teacher = SEDD.from_pretrained(teacher_path)
                if teacher.config.model.length < seq_len:
                    raise UserError(f"the teacher handles {teacher.config.model.length} positions < seq_len {seq_len}")
                graph, noise = get_graph(teacher.config.graph.type, teacher.config.tokens), get_noise(teacher.config.noise)
                return DistillObjective(SEDD.from_pretrained(teacher_path), teacher, graph, noise, teacher_steps,
                                        cfg.divergence, cfg.eps)

            trainer = Trainer(dataclasses.replace(train_cfg, out=str(out)), build=build)  # checks data and teacher
            print(f"pysedd distill: round {r}: {teacher_steps} teacher steps -> {teacher_steps // 2} student steps",
                  file=sys.stderr)
            try:
                if trainer.dist.main:
                    out.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(settings, json.dumps(record, indent=2) + "\n")
                code = trainer.fit()
            finally:
                trainer.close()
                trainer.dist.close()
            if code:
                return code
            if trainer.dist.main:
                atomic_write_text(marker, json.dumps(record, indent=2) + "\n")
        summary.append({**record, "export": str(out / "export")})
        teacher_path = out / "export"
    atomic_write_text(Path(train_cfg.out) / "rounds.json", json.dumps(summary, indent=2, default=str) + "\n")
    return 0


def read_student_steps(path: str | Path) -> int | None:
    """The sampling step count a distilled student was trained for (its export's distill.json), else None."""
    marker = Path(path) / "distill.json"
    return int(json.loads(marker.read_text())["student_steps"]) if marker.is_file() else None


__all__ = ["DIVERGENCES", "DistillConfig", "DistillObjective", "distill", "heldout_divergence", "read_student_steps", "step_divergence",
           "student_step", "two_step_target", "unmask_probability"]
