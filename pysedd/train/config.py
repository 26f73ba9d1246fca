"""Training configuration: one flat dataclass, readable from YAML/JSON, with the paper's presets.

The global batch is ``batch_size`` sequences per optimizer step, split as micro_batch_size × accumulation × world size
(world = number of DDP processes). The sequence length comes from the prepared data's manifest.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from pysedd.errors import UserError
from pysedd.config import dataclass_from_dict

MODELS = ("sedd", "gpt2")


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

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.validate()

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
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    text = path.read_text()
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


# The paper's recipe (sedd-spec.md §8): global batch 512 × 1024 tokens, AdamW 3e-4, 2500 warm-up steps, constant lr,
# EMA 0.9999, clip 1.0. "cpu-tiny" is for laptops and smoke tests.
PRESETS: dict[str, dict] = {
    "paper-small": dict(size="small", batch_size=512, steps=1_300_001, warmup_steps=2500, log_every=50,
                        eval_every=100, ckpt_every=10_000),
    "paper-medium": dict(size="medium", batch_size=512, steps=1_300_001, warmup_steps=2500, log_every=50,
                         eval_every=100, ckpt_every=10_000),
    "cpu-tiny": dict(size="tiny", batch_size=8, steps=200, warmup_steps=20, log_every=10, eval_every=50,
                     eval_batches=2, ckpt_every=50),
}
