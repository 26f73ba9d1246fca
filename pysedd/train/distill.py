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
import hashlib
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pysedd.errors import UserError
from pysedd.io import atomic_path, atomic_write_text, sha256_file

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


@dataclass
class StepTargets:
    """A batch of distillation examples: the noised sequences, their times, and the teacher's two-step target at the
    scored positions (what `two_step_target` returns). Drawn on the fly, or read back from a `TargetStore`."""
    x_t: torch.Tensor  # [B, L] token ids at time t
    t: torch.Tensor  # [B] float64, on the student's grid
    rows: tuple[torch.Tensor, torch.Tensor]  # (batch index, position) of the scored positions, row-major
    log_target: torch.Tensor  # [R, N] log p̄ over the real tokens
    pi12: torch.Tensor  # [R] float64: the two-step unmask probability π12
    weight: torch.Tensor  # [R] float64: 1 / (1 - π1)


@torch.no_grad()
def draw_targets(teacher: nn.Module, graph, noise, x0: torch.Tensor, teacher_steps: int, eps: float = SAMPLING_EPS,
                 generator: torch.Generator | None = None) -> StepTargets:
    """t uniform over the student's grid, x_t ~ q(x_t | x0), and the teacher's two analytic steps of Δ from x_t."""
    delta = (1.0 - eps) / teacher_steps
    k = torch.randint(0, teacher_steps // 2, (x0.shape[0],), device=x0.device, generator=generator)
    t = student_grid_time(k, teacher_steps // 2, eps)
    x_t = graph.sample_transition(x0, noise.total_noise(t), generator=generator)
    rows, log_target, pi12, weight = two_step_target(teacher, graph, noise, x_t, t, delta, generator)
    return StepTargets(x_t, t, rows, log_target, pi12, weight)


def distill_loss(student: nn.Module, noise, targets: StepTargets, delta: float, divergence: str,
                 n_tokens: int) -> torch.Tensor:
    """Per-sequence loss [B]: Σ over the scored positions of weight × divergence(student one step of 2Δ, target)."""
    sigma = noise.total_noise(targets.t)
    rows = targets.rows
    dsigma = (sigma - noise.total_noise((targets.t - 2 * delta).clamp_min(0.0)))[rows[0]]
    log_a, log_ps = student_step(student(targets.x_t, sigma.float())[rows], n_tokens, dsigma)
    div = step_divergence(log_a, log_ps, targets.pi12, targets.log_target, divergence) * targets.weight
    B = targets.x_t.shape[0]
    return torch.zeros(B, dtype=torch.float64, device=targets.x_t.device).index_add(0, rows[0], div).float()


def _check_objective(graph, model, teacher_steps: int, divergence: str) -> None:
    if divergence not in DIVERGENCES:
        raise UserError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
    if not (graph.absorb and getattr(model, "scale_by_sigma", False)):
        raise UserError("distillation needs an absorbing-graph SEDD with scale_by_sigma (the teacher's "
                        "normalised scores are its denoiser)")
    if teacher_steps < 2 or teacher_steps % 2:
        raise UserError(f"the teacher's step count must be even and >= 2, got {teacher_steps}")


class DistillObjective(nn.Module):
    """forward(x0) -> per-sequence distillation loss [B]: Σ over masked positions of divergence(student one step of
    2Δ, teacher two steps of Δ), Δ = (1 - eps) / teacher_steps, t uniform over the student's grid, x_t ~ q(x_t | x0).

    `model` is the student (the trainer optimises, averages and exports it); the teacher is frozen in eval mode."""

    def __init__(self, student, teacher, graph, noise, teacher_steps: int, divergence: str = "reverse_kl",
                 eps: float = SAMPLING_EPS):
        super().__init__()
        _check_objective(graph, teacher, teacher_steps, divergence)
        self.model, self.teacher, self.graph, self.noise = student, teacher.eval().requires_grad_(False), graph, noise
        self.teacher_steps, self.divergence, self.eps = teacher_steps, divergence, eps
        self.delta = (1.0 - eps) / teacher_steps

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # no dropout in the targets
        return self

    def draw(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> StepTargets:
        return draw_targets(self.teacher, self.graph, self.noise, x0, self.teacher_steps, self.eps, generator)

    def forward(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return distill_loss(self.model, self.noise, self.draw(x0, generator), self.delta, self.divergence,
                            self.graph.n_tokens)

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
# stored teacher targets (docs/distillation.md#stored-teacher-targets)

STORE_FORMAT = 1
EXAMPLES_PER_SHARD = 16  # sequences per teacher batch and per shard file
SHARD_NAME = re.compile(r"shard-[0-9]{6}\.safetensors")
TINY = torch.finfo(torch.float32).tiny  # the floor of a top-k target's residual mass (keeps reverse KL finite)


def truncate_target(log_target: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top_index [R, K], top_logp [R, K], log_rest [R]): the K most likely tokens of each target row kept exactly,
    the remaining mass spread evenly over the other N - K tokens (floored at float32's smallest normal)."""
    n_tokens = log_target.shape[-1]
    top_logp, top_index = log_target.float().topk(top_k, dim=-1)
    rest = (1.0 - top_logp.double().exp().sum(-1)).clamp_min(TINY)
    return top_index, top_logp, (rest.log() - math.log(n_tokens - top_k)).float()


def expand_target(top_index: torch.Tensor, top_logp: torch.Tensor, log_rest: torch.Tensor,
                  n_tokens: int) -> torch.Tensor:
    """The dense [R, N] log-target of a truncated one (the inverse of `truncate_target` on the kept tokens)."""
    dense = log_rest[:, None].expand(-1, n_tokens).clone()
    return dense.scatter_(1, top_index.long(), top_logp)


def expected_store_bytes(noise, n_examples: int, seq_len: int, n_tokens: int, teacher_steps: int, top_k: int,
                         eps: float = SAMPLING_EPS) -> float:
    """The expected size of a store: per sequence its ids and time, per scored position its target row. A position
    is scored when masked at t (probability 1 - e^{-σ(t)}) and still masked after the first step (1 - π1)."""
    k = torch.arange(teacher_steps // 2)
    t = student_grid_time(k, teacher_steps // 2, eps)
    delta = (1.0 - eps) / teacher_steps
    scored = (-torch.expm1(-noise.total_noise(t)) * (1 - unmask_probability(noise, t, (t - delta).clamp_min(0.0))))
    row_bytes = 8 * 3 + (4 * n_tokens if top_k == 0 else 8 * top_k + 4)
    return n_examples * (seq_len * 8 + 16 + float(scored.mean()) * seq_len * row_bytes)


class TargetStore:
    """Teacher targets precomputed once and read back by any number of student runs (`--precompute-targets`).

    A store is a directory `<root>/<settings-hash>/` of safetensors shards (EXAMPLES_PER_SHARD sequences each: x_t,
    t, the scored positions in CSR form, π12, the weights and the target rows, full or top-k) and `store.json`,
    written last, which lists every shard with its size and sha256: a store without it is unfinished and its shards
    are resumed. Nothing in it is unpickled; a shard is checked against its sha256 the first time it is read
    (unless verify is 'size').
    """

    def __init__(self, root: str | Path, settings: dict):
        self.settings = {"format": STORE_FORMAT, "examples_per_shard": EXAMPLES_PER_SHARD, **settings}
        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.dir = Path(root) / f"targets-{digest}"
        self.n_examples = int(self.settings["n_examples"])
        self.n_tokens = int(self.settings["n_tokens"])
        self.top_k = int(self.settings["top_k"])
        self.verify = "auto"
        self._hashes: list[str] = []
        self._verified: set[str] = set()

    @property
    def n_shards(self) -> int:
        return -(-self.n_examples // EXAMPLES_PER_SHARD)

    def shard_path(self, s: int) -> Path:
        return self.dir / f"shard-{s:06d}.safetensors"

    @property
    def complete(self) -> bool:
        return (self.dir / "store.json").is_file()

    # -- writing --------------------------------------------------------------------------------------------------
    def write_shard(self, s: int, targets: StepTargets) -> None:
        from safetensors.torch import save_file

        b, pos = targets.rows
        n = targets.x_t.shape[0]
        tensors = {"x_t": targets.x_t.cpu().long(), "t": targets.t.cpu().double(), "pos": pos.cpu().long(),
                   "row_ptr": torch.cat([torch.zeros(1, dtype=torch.long),
                                         torch.bincount(b.cpu(), minlength=n).cumsum(0)]),
                   "pi12": targets.pi12.cpu().double(), "weight": targets.weight.cpu().double()}
        if self.top_k:
            top_index, top_logp, log_rest = truncate_target(targets.log_target, self.top_k)
            tensors.update(top_index=top_index.cpu().int(), top_logp=top_logp.cpu(), log_rest=log_rest.cpu())
        else:
            tensors["log_target"] = targets.log_target.cpu().float()
        with atomic_path(self.shard_path(s)) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"shard": str(s)})

    def finish(self) -> None:
        """Writes store.json once every shard is there: the store is complete from then on."""
        missing = [s for s in range(self.n_shards) if not self.shard_path(s).is_file()]
        if missing:
            raise UserError(f"target store {self.dir} lacks {len(missing)} shard(s), e.g. {self.shard_path(missing[0])}")
        shards = [{"file": self.shard_path(s).name, "bytes": self.shard_path(s).stat().st_size,
                   "sha256": sha256_file(self.shard_path(s))} for s in range(self.n_shards)]
        atomic_write_text(self.dir / "store.json", json.dumps({"settings": self.settings, "shards": shards},
                                                              indent=2, default=str) + "\n")

    # -- reading --------------------------------------------------------------------------------------------------
    def open(self, verify: str = "auto") -> "TargetStore":
        """Reads store.json and checks it against these settings and every shard's size."""
        path = self.dir / "store.json"
        try:
            index = json.loads(path.read_text())
            shards = index["shards"]
            files = [entry["file"] for entry in shards]
            sizes = [int(entry["bytes"]) for entry in shards]
            self._hashes = [str(entry["sha256"]) for entry in shards]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"target store {path} is unreadable: {exc}") from None
        if json.loads(json.dumps(self.settings, default=str)) != index.get("settings"):
            raise UserError(f"target store {path} was written with other settings")
        if files != [self.shard_path(s).name for s in range(self.n_shards)] or not all(map(SHARD_NAME.fullmatch, files)):
            raise UserError(f"target store {path} does not list shards 0..{self.n_shards - 1}")
        for name, size in zip(files, sizes):
            if not (self.dir / name).is_file() or (self.dir / name).stat().st_size != size:
                raise UserError(f"target store {self.dir}: {name} is missing or has the wrong size")
        self.verify = verify
        return self

    def _shard(self, s: int):
        from safetensors import SafetensorError, safe_open

        path = self.shard_path(s)
        if self.verify != "size" and path.name not in self._verified:
            if sha256_file(path) != self._hashes[s]:
                raise UserError(f"target store shard {path} does not match its sha256 in store.json")
            self._verified.add(path.name)
        try:
            return safe_open(str(path), framework="pt")
        except (SafetensorError, OSError) as exc:
            raise UserError(f"target store shard {path} is unreadable: {exc}") from None

    def examples(self, indices: list[int], device: torch.device | str = "cpu") -> StepTargets:
        """The stored examples `indices`, batched as `draw_targets` returns them."""
        x_t, t, b, pos, log_target, pi12, weight = [], [], [], [], [], [], []
        for i, index in enumerate(indices):
            s, j = divmod(int(index), EXAMPLES_PER_SHARD)
            f = self._shard(s)
            ptr = f.get_slice("row_ptr")[j:j + 2].tolist()
            x_t.append(f.get_slice("x_t")[j:j + 1])
            t.append(f.get_slice("t")[j:j + 1])
            rows = slice(ptr[0], ptr[1])
            pos.append(f.get_slice("pos")[rows])
            b.append(torch.full((ptr[1] - ptr[0],), i, dtype=torch.long))
            pi12.append(f.get_slice("pi12")[rows])
            weight.append(f.get_slice("weight")[rows])
            if self.top_k:
                log_target.append(expand_target(f.get_slice("top_index")[rows], f.get_slice("top_logp")[rows],
                                                f.get_slice("log_rest")[rows], self.n_tokens))
            else:
                log_target.append(f.get_slice("log_target")[rows])
        cat = lambda parts: torch.cat(parts).to(device)  # noqa: E731
        return StepTargets(cat(x_t), cat(t), (cat(b), cat(pos)), cat(log_target), cat(pi12), cat(weight))


@torch.no_grad()
def precompute_targets(store: TargetStore, teacher_path, data, order: list[int], teacher_steps: int, eps: float,
                       seed: int, device: torch.device, rank: int = 0, world: int = 1, progress: bool = True) -> None:
    """This rank's missing shards (s ≡ rank mod world) of `store`: shard s holds the teacher's targets for the
    sequences order[16 s : 16 (s + 1)], drawn with a generator seeded by (seed, s), so a shard is the same whoever
    computes it and whenever. Shards already written are kept (a killed precompute resumes)."""
    from tqdm.auto import tqdm

    from pysedd.graph import get_graph
    from pysedd.model import SEDD
    from pysedd.noise import get_noise
    from pysedd.train.trainer import seed_for

    todo = [s for s in range(rank, store.n_shards, world) if not store.shard_path(s).is_file()]
    if not todo:
        return
    teacher = SEDD.from_pretrained(teacher_path).to(device).eval()
    graph, noise = get_graph(teacher.config.graph.type, teacher.config.tokens), get_noise(teacher.config.noise)
    _check_objective(graph, teacher, teacher_steps, "reverse_kl")
    for s in tqdm(todo, desc="teacher targets", unit="shard", disable=not progress):
        x0 = data.batch(order[s * EXAMPLES_PER_SHARD:(s + 1) * EXAMPLES_PER_SHARD]).to(device)
        generator = torch.Generator(device).manual_seed(seed_for(seed, s))
        store.write_shard(s, draw_targets(teacher, graph, noise, x0, teacher_steps, eps, generator))


class StoredTargetObjective(nn.Module):
    """The distillation loss on examples read from a `TargetStore` instead of drawn with the teacher: the teacher is
    not loaded while the student trains. Each sequence of a micro-batch is a stored example drawn uniformly with the
    trainer's seeded generator; the trainer's batch x0 only sets how many (its data went into the store)."""

    def __init__(self, student, store: TargetStore, graph, noise, teacher_steps: int, divergence: str = "reverse_kl",
                 eps: float = SAMPLING_EPS):
        super().__init__()
        _check_objective(graph, student, teacher_steps, divergence)
        self.model, self.store, self.graph, self.noise = student, store, graph, noise
        self.divergence, self.delta = divergence, (1.0 - eps) / teacher_steps

    def forward(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        index = torch.randint(0, self.store.n_examples, (x0.shape[0],), device=x0.device, generator=generator)
        targets = self.store.examples(index.tolist(), x0.device)
        return distill_loss(self.model, self.noise, targets, self.delta, self.divergence, self.graph.n_tokens)

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)


# ---------------------------------------------------------------------------------------------------------------
# rounds


@dataclass
class DistillConfig:
    teacher: str = ""  # directory or hub id of the round-0 teacher (an absorbing-graph SEDD)
    rounds: int = 1
    steps: int = 1024  # the round-0 teacher's sampling steps; round r's student samples with steps / 2^(r+1)
    divergence: str = "reverse_kl"
    eps: float = SAMPLING_EPS
    precompute_targets: int = 0  # sequences whose teacher targets each round stores first (0: drawn on the fly)
    targets: str = ""  # where target stores live (default OUT/targets); several runs may share one
    target_top_k: int = 0  # store each target row's K most likely tokens and the rest evenly (0: the whole row)

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
        if self.precompute_targets < 0 or self.target_top_k < 0:
            raise UserError("precompute_targets and target_top_k must be >= 0")
        if (self.targets or self.target_top_k) and not self.precompute_targets:
            raise UserError("targets and target_top_k apply to stored targets: set precompute_targets too")


def round_dir(out: str | Path, r: int) -> Path:
    return Path(out) / f"round-{r}"


def distill(cfg: DistillConfig, train_cfg, stop=None) -> int:
    """Runs the rounds (skipping finished ones); each round's run directory is RUN/round-r with the trainer's
    checkpoints, metrics.jsonl and export/ (the student, loadable with SEDD.from_pretrained, plus distill.json).
    Returns the trainer's exit code (75 when preempted: run again to resume). `stop`: a `pysedd.signals.StopRequest`
    shared by every round (the CLI installs it first), else each round's trainer installs its own."""
    from pysedd.graph import get_graph
    from pysedd.model import SEDD
    from pysedd.noise import get_noise
    from pysedd.train.trainer import Trainer

    cfg.validate()
    if cfg.precompute_targets and train_cfg.eval_every:
        raise UserError("a validation loss needs the teacher's targets on held-out data: with precompute_targets, "
                        "set eval_every to 0")
    teacher_path = cfg.teacher
    summary = []
    for r in range(cfg.rounds):
        out = round_dir(train_cfg.out, r)
        teacher_steps = cfg.steps // 2 ** r
        record = dict(round=r, teacher=str(teacher_path), teacher_steps=teacher_steps,
                      student_steps=teacher_steps // 2, divergence=cfg.divergence, eps=cfg.eps,
                      precompute_targets=cfg.precompute_targets, target_top_k=cfg.target_top_k,
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
                if cfg.precompute_targets:  # the store is attached once the trainer has read the data
                    return StoredTargetObjective(teacher, None, graph, noise, teacher_steps, cfg.divergence,
                                                 cfg.eps)
                return DistillObjective(SEDD.from_pretrained(teacher_path), teacher, graph, noise, teacher_steps,
                                        cfg.divergence, cfg.eps)

            trainer = Trainer(dataclasses.replace(train_cfg, out=str(out)), stop, build)  # checks data and teacher
            print(f"pysedd distill: round {r}: {teacher_steps} teacher steps -> {teacher_steps // 2} student steps",
                  file=sys.stderr)
            try:
                if trainer.dist.main:
                    out.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(settings, json.dumps(record, indent=2) + "\n")
                if cfg.precompute_targets:
                    trainer.objective.store = stored_targets(cfg, train_cfg, trainer, teacher_path, teacher_steps)
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


def stored_targets(cfg: DistillConfig, train_cfg, trainer, teacher_path, teacher_steps: int) -> TargetStore:
    """The round's target store, opened: reused when a finished one with these settings exists (in --targets, shared
    between runs), else computed first, split over the ranks."""
    from pysedd.loader import fingerprint_path
    from pysedd.train.trainer import SampleOrder

    n_tokens, seq_len = trainer.objective.graph.n_tokens, trainer.seq_len
    if cfg.target_top_k >= n_tokens:
        raise UserError(f"target_top_k {cfg.target_top_k} must be below the vocabulary size {n_tokens} (0 stores "
                        "whole rows)")
    teacher = fingerprint_path(teacher_path) if Path(teacher_path).exists() else {"hub_id": str(teacher_path)}
    store = TargetStore(cfg.targets or Path(train_cfg.out) / "targets", dict(
        teacher=teacher, teacher_steps=teacher_steps, eps=cfg.eps, data_sha256=trainer.trajectory["data_sha256"],
        seq_len=seq_len, n_examples=cfg.precompute_targets, n_tokens=n_tokens, top_k=cfg.target_top_k,
        seed=train_cfg.seed))
    if not store.complete:
        if trainer.dist.main:
            need = expected_store_bytes(trainer.objective.noise, cfg.precompute_targets, seq_len, n_tokens,
                                        teacher_steps, cfg.target_top_k, cfg.eps)
            store.dir.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(store.dir).free
            if need > free:
                raise UserError(f"the target store {store.dir} needs about {need / 1e9:.3g} GB and {free / 1e9:.3g} GB "
                                "are free: store fewer sequences or pass --target-top-k")
            print(f"pysedd distill: storing the teacher targets of {cfg.precompute_targets} sequences in {store.dir} "
                  f"(about {need / 1e9:.3g} GB)", file=sys.stderr)
        trainer.dist.barrier()
        order = SampleOrder(len(trainer.train_data), train_cfg.seed).indices(0, cfg.precompute_targets)
        precompute_targets(store, teacher_path, trainer.train_data, order, teacher_steps, cfg.eps, train_cfg.seed,
                           trainer.dist.device, trainer.dist.rank, trainer.dist.world,
                           progress=train_cfg.progress and trainer.dist.main)
        trainer.dist.barrier()
        if trainer.dist.main:
            store.finish()
        trainer.dist.barrier()
    elif trainer.dist.main:
        print(f"pysedd distill: reusing the stored teacher targets in {store.dir}", file=sys.stderr)
    return store.open(train_cfg.verify_data)


def read_student_steps(path: str | Path) -> int | None:
    """The sampling step count a distilled student was trained for (its export's distill.json), else None."""
    marker = Path(path) / "distill.json"
    return int(json.loads(marker.read_text())["student_steps"]) if marker.is_file() else None


__all__ = ["DIVERGENCES", "DistillConfig", "DistillObjective", "StepTargets", "StoredTargetObjective", "TargetStore",
           "distill", "distill_loss", "draw_targets", "expand_target", "heldout_divergence", "precompute_targets",
           "read_student_steps", "step_divergence", "stored_targets", "student_step", "truncate_target",
           "two_step_target", "unmask_probability"]
