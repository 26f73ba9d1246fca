"""Typed model/graph/noise configuration that reads and writes the official SEDD `config.json`.

The released checkpoints (louaaron/sedd-small, sedd-medium) ship a hydra dump with many sections; pysedd types the
three it needs (model, graph, noise) strictly and carries the other known sections through unchanged, so a config read
from the hub is written back byte-for-byte equivalent.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

GPT2_TOKENS = 50257

TYPED_SECTIONS = ("tokens", "model", "graph", "noise")


@dataclass
class ModelConfig:
    hidden_size: int = 768
    cond_dim: int = 128
    length: int = 1024
    n_blocks: int = 12
    n_heads: int = 12
    scale_by_sigma: bool = True
    dropout: float = 0.1
    name: str = "small"
    type: str = "ddit"

    def validate(self) -> None:
        for key in ("hidden_size", "cond_dim", "length", "n_blocks", "n_heads"):
            if getattr(self, key) <= 0:
                raise UserError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.hidden_size % self.n_heads:
            raise UserError(f"model.hidden_size ({self.hidden_size}) must be divisible by model.n_heads ({self.n_heads})")
        if (self.hidden_size // self.n_heads) % 2:
            raise UserError("model.hidden_size / model.n_heads must be even (rotary embedding)")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.type != "ddit":
            raise UserError(f"model.type must be 'ddit', got {self.type!r}")


@dataclass
class GraphConfig:
    type: str = "absorb"
    file: str | None = None
    report_all: bool | None = None

    def validate(self) -> None:
        if self.type not in ("absorb", "uniform"):
            raise UserError(f"graph.type must be 'absorb' or 'uniform', got {self.type!r}")


@dataclass
class NoiseConfig:
    type: str = "loglinear"
    sigma_min: float = 1e-4
    sigma_max: float = 20.0

    def validate(self) -> None:
        try:  # hydra YAML may hold "1e-4" as a string
            self.sigma_min, self.sigma_max = float(self.sigma_min), float(self.sigma_max)
        except (TypeError, ValueError):
            raise UserError(f"noise.sigma_min/sigma_max must be numbers, got {self.sigma_min!r}, {self.sigma_max!r}") from None
        if self.type not in ("loglinear", "geometric"):
            raise UserError(f"noise.type must be 'loglinear' or 'geometric', got {self.type!r}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise UserError(f"noise needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")


PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized models for demos and tests.
    "tiny": dict(hidden_size=128, cond_dim=64, n_blocks=2, n_heads=4, length=128),
    "mini": dict(hidden_size=256, cond_dim=64, n_blocks=4, n_heads=4, length=256),
    # The released checkpoints (paper: ~90M / ~320M non-embedding parameters).
    "small": dict(hidden_size=768, cond_dim=128, n_blocks=12, n_heads=12, length=1024),
    "medium": dict(hidden_size=1024, cond_dim=128, n_blocks=24, n_heads=16, length=1024),
    # Table 7 of Deschenaux & Gulcehre: ~1.45B-parameter SEDD compared with a 1.3B GPT-2, 2048 context.
    "large-1.45b": dict(hidden_size=2048, cond_dim=128, n_blocks=24, n_heads=32, length=2048),  # Table 7: 32 heads
}


def dataclass_from_dict(cls, values: Any, what: str):
    """Build dataclass `cls` from a mapping, naming every unknown field (`what` says where they came from)."""
    if not isinstance(values, dict):
        raise UserError(f"{what} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown field(s) in {what}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**values)


@dataclass
class SEDDConfig:
    tokens: int = GPT2_TOKENS
    model: ModelConfig = field(default_factory=ModelConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # The other sections of the official hydra dump (ngpus, training, data, sampling, eval, optim, ...): pysedd does
    # not interpret them, only carries them through so a config read from the hub is written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.tokens, int) or self.tokens < 2:
            raise UserError(f"tokens must be an integer >= 2, got {self.tokens!r}")
        self.model.validate()
        self.graph.validate()
        self.noise.validate()
        if self.model.scale_by_sigma and self.graph.type != "absorb":
            raise UserError("model.scale_by_sigma is only defined for graph.type='absorb' (set it to false for uniform)")

    @property
    def vocab_size(self) -> int:
        """Model output width: the real tokens plus the MASK token for the absorbing graph."""
        return self.tokens + 1 if self.graph.type == "absorb" else self.tokens

    @classmethod
    def preset(cls, name: str, graph: str = "absorb", tokens: int = GPT2_TOKENS, **model_overrides: Any) -> "SEDDConfig":
        if name not in PRESETS:
            raise UserError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        model = ModelConfig(name=name, **{**PRESETS[name], **model_overrides})
        if graph == "uniform":
            model.scale_by_sigma = False
            return cls(tokens=tokens, model=model, graph=GraphConfig("uniform"), noise=NoiseConfig("geometric"))
        return cls(tokens=tokens, model=model, graph=GraphConfig(graph), noise=NoiseConfig("loglinear"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SEDDConfig":
        if not isinstance(d, dict):
            raise UserError(f"a SEDD config must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("model", "graph", "noise") if k not in d]
        if missing:
            raise UserError(f"config is missing section(s): {', '.join(missing)}")
        return cls(
            tokens=d.get("tokens", GPT2_TOKENS),
            model=dataclass_from_dict(ModelConfig, d["model"], "config section 'model'"),
            graph=dataclass_from_dict(GraphConfig, d["graph"], "config section 'graph'"),
            noise=dataclass_from_dict(NoiseConfig, d["noise"], "config section 'noise'"),
            extra={k: v for k, v in d.items() if k not in TYPED_SECTIONS},
        )

    def to_dict(self) -> dict[str, Any]:
        drop_none = lambda obj: {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}  # noqa: E731
        return {
            **self.extra,
            "tokens": self.tokens,
            "model": dataclasses.asdict(self.model),
            "graph": drop_none(self.graph),
            "noise": dataclasses.asdict(self.noise),
        }

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "SEDDConfig":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def to_json_file(self, path: str | os.PathLike) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
