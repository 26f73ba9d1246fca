"""Training configuration: one flat dataclass, readable from YAML/JSON, with the paper's presets.

The global batch is ``batch_size`` sequences per optimizer step, split as micro_batch_size × accumulation × world size
(world = number of DDP processes). The sequence length comes from the prepared data's manifest.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from pysedd.errors import UserError
from pysedd.io import require_file
from pysedd.config import dataclass_from_dict

MODELS = ("sedd", "gpt2")
TRAJECTORY_FIELDS = ("model", "size", "graph", "noise", "dropout", "hidden_size", "n_blocks", "n_heads", "init_from",
                     "train_split", "batch_size", "lr", "betas", "eps", "weight_decay", "warmup_steps", "grad_clip",
                     "ema_decay", "seed", "precision")


@dataclass
class TrainConfig:
    model: str = "sedd"  # sedd | gpt2 (transformers GPT2LMHeadModel of the same width and depth)
    size: str = "tiny"  # a SEDDConfig preset: tiny, mini, small (paper: 768x12), medium (1024x24), large-1.45b
    graph: str = "absorb"  # SEDD only: absorb | uniform
    noise: str | None = None  # SEDD only: loglinear | geometric; None: loglinear for absorb, geometric for uniform
    dropout: float | None = None  # None: the preset's (0.1)
    hidden_size: int | None = None  # None: the preset's; set these three for custom (e.g. test-sized) models
    n_blocks: int | None = None
    n_heads: int | None = None
    fused_loss: bool = True  # SEDD absorb + scale_by_sigma: pysedd.ops fused loss (no [B, L, V] scores); same values
    init_from: str | None = None  # start from pretrained weights: a directory or hub id (gpt2, louaaron/sedd-small)
    data: str = ""  # directory written by `pysedd prepare`
    train_split: str = "train"
    val_split: str = "validation"
    out: str = "runs/sedd"
    steps: int = 1000
    batch_size: int = 512  # global sequences per optimizer step
    micro_batch_size: int = 0  # sequences per process per forward; 0 = batch_size / world (no accumulation)
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 2500
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0  # 0 = no periodic evaluation
    eval_batches: int = 8
    ckpt_every: int = 10_000
    keep_last: int = 3
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    progress: bool = True
    verify_data: str = "auto"  # auto (sha256 of small files, sampled pages of large ones) | full | size
    supersede: bool = False  # move a run of other trajectory settings in `out` aside instead of refusing

    def __post_init__(self):
        self._check_types()
        self.betas = tuple(self.betas)
        self.validate()

    def _check_types(self) -> None:
        """Every field holds its annotated type (an int where an int belongs: `steps: ten` or `log_every: 1.5` are
        errors, not surprises later); ints are accepted for floats and become floats."""
        for name, hint in typing.get_type_hints(TrainConfig).items():
            value = getattr(self, name)
            optional = typing.get_origin(hint) in (typing.Union, types.UnionType)  # `int | None`
            if optional and value is None:
                continue
            kind = typing.get_args(hint)[0] if optional else hint
            if typing.get_origin(kind) is tuple:  # betas
                if not (isinstance(value, (list, tuple)) and len(value) == 2
                        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                    raise UserError(f"{name} must be two numbers, got {value!r}")
                setattr(self, name, tuple(float(v) for v in value))
            elif kind is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
            elif kind is float and isinstance(value, str):
                raise UserError(f"{name} must be a number, got the text {value!r} (YAML reads 3e-4 as text: "
                                "write 3.0e-4)")
            elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise UserError(f"{name} must be {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")

    def validate(self) -> None:
        if self.model not in MODELS:
            raise UserError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        from pysedd.config import PRESETS as SIZES

        if self.size not in SIZES:
            raise UserError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        for name in ("steps", "batch_size", "keep_last", "log_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("micro_batch_size", "warmup_steps", "eval_every", "ckpt_every"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and self.grad_clip > 0 and 0 <= self.ema_decay < 1):
            raise UserError("lr and grad_clip must be positive and ema_decay in [0, 1)")
        if not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"betas must both be in [0, 1) (AdamW's moment decays), got {list(self.betas)}")
        if not (self.eps > 0 and self.weight_decay >= 0):
            raise UserError("eps must be positive and weight_decay >= 0")
        if self.verify_data not in ("auto", "full", "size"):
            raise UserError(f"verify_data must be auto, full or size, got {self.verify_data!r}")

    def trajectory(self) -> dict:
        """The settings that decide what training computes (with the data's identity, which the trainer adds): a run
        directory resumes only under the same ones. Not among them: steps (a larger one continues the run), logging,
        evaluation and checkpoint cadence, device, number of processes and micro-batch size, and the fused/plain
        loss (the same sums in another float order)."""
        return {name: (list(v) if isinstance(v, tuple) else v)
                for name in TRAJECTORY_FIELDS for v in [getattr(self, name)]}

    def model_overrides(self) -> dict:
        """The ModelConfig fields this config changes relative to the size preset."""
        names = ("dropout", "hidden_size", "n_blocks", "n_heads")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def accumulation(self, world_size: int) -> tuple[int, int]:
        """(micro batch per process, accumulation steps) giving exactly ``batch_size`` sequences per step."""
        if self.batch_size % world_size:
            raise UserError(f"batch_size {self.batch_size} is not divisible by the {world_size} processes")
        per_rank = self.batch_size // world_size
        micro = self.micro_batch_size or per_rank
        if per_rank % micro:
            raise UserError(
                f"batch_size / processes = {per_rank} is not a multiple of micro_batch_size {micro}"
            )
        return micro, per_rank // micro

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return dataclass_from_dict(cls, d, "training options")

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_options(path))

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        return cls.from_dict({**PRESETS[_preset_name(name)], **overrides})


def _preset_name(name: str) -> str:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return name


def preset_options(name: str) -> dict:
    return dict(PRESETS[_preset_name(name)])


def read_options(path: str | Path) -> dict:
    """The options in a .json or .yaml/.yml file: a flat mapping of TrainConfig fields (``preset:`` picks a base)."""
    path = require_file(path, "config file")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            d = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a mapping of training options")
    return {**preset_options(d.pop("preset")), **d} if "preset" in d else d


# The paper's recipe (docs/sedd.md#training-recipe): global batch 512 × 1024 tokens, AdamW 3e-4,
# 2500 warm-up steps, constant lr, EMA 0.9999, clip 1.0. "cpu-tiny" is for laptops and smoke tests.
PRESETS: dict[str, dict] = {
    "paper-small": dict(size="small", batch_size=512, steps=1_300_001, warmup_steps=2500, log_every=50,
                        eval_every=100, ckpt_every=10_000),
    "paper-medium": dict(size="medium", batch_size=512, steps=1_300_001, warmup_steps=2500, log_every=50,
                         eval_every=100, ckpt_every=10_000),
    "cpu-tiny": dict(size="tiny", batch_size=8, steps=200, warmup_steps=20, log_every=10, eval_every=50,
                     eval_batches=2, ckpt_every=50),
}
