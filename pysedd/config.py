"""Typed model/graph/noise configuration that reads and writes the official SEDD `config.json`.

The released checkpoints (louaaron/sedd-small, sedd-medium) ship a hydra dump with many sections; pysedd types the
three it needs (model, graph, noise) and carries everything else through unchanged, so a config read from the hub is
written back with the same content. The reference builds its model from an OmegaConf dict and ignores fields it does
not read, so a field pysedd does not know inside model/graph/noise is accepted with one warning (and written back);
the values of known fields are checked strictly (type, range) and the model's size is bounded before anything is
allocated (see `check_size`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

GPT2_TOKENS = 50257

TYPED_SECTIONS = ("tokens", "model", "graph", "noise")

# Size bounds checked before a model is built: a corrupt or hostile config.json must not allocate terabytes or build
# modules for minutes. Genuinely larger models: `pysedd --allow-huge ...` or PYSEDD_ALLOW_HUGE=1.
ALLOW_HUGE_ENV = "PYSEDD_ALLOW_HUGE"
MAX_PARAMETERS = 20_000_000_000
MAX_BLOCKS = 1024
MAX_LENGTH = 1 << 17


def huge_allowed() -> bool:
    return os.environ.get(ALLOW_HUGE_ENV, "").lower() in ("1", "true", "yes")


def check_size(what: str, parameters: int, limits: dict[str, tuple[int, int]] | None = None) -> None:
    """Refuse a model of more than MAX_PARAMETERS parameters, or any `limits` entry name -> (value, bound) above its
    bound, unless `pysedd --allow-huge` or PYSEDD_ALLOW_HUGE=1."""
    if huge_allowed():
        return
    over = [f"{name} = {value:,} > {bound:,}" for name, (value, bound) in (limits or {}).items() if value > bound]
    if parameters > MAX_PARAMETERS:
        over.insert(0, f"about {parameters:,} parameters > {MAX_PARAMETERS:,}")
    if over:
        raise UserError(f"{what} describes an implausibly large model ({'; '.join(over)}); if it is genuine, "
                        f"run pysedd --allow-huge <command> ... (or set {ALLOW_HUGE_ENV}=1)")


def _check_field_types(obj, section: str) -> None:
    """Every field holds its annotated type exactly: no bool for an int, no string for a bool, finite floats."""
    for name, hint in typing.get_type_hints(type(obj)).items():
        value = getattr(obj, name)
        optional = type(None) in typing.get_args(hint)
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        if value is None and optional:
            continue
        if base is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif base is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, base)
        if not ok:
            expected = "a finite number" if base is float else f"a{'n' if base is int else ''} {base.__name__}"
            raise UserError(f"{section}.{name} must be {expected}{' or null' if optional else ''}, got {value!r}")


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
        _check_field_types(self, "model")
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
        _check_field_types(self, "graph")
        if self.type not in ("absorb", "uniform"):
            raise UserError(f"graph.type must be 'absorb' or 'uniform', got {self.type!r}")


@dataclass
class NoiseConfig:
    type: str = "loglinear"
    sigma_min: float = 1e-4
    sigma_max: float = 20.0

    def validate(self) -> None:
        for name in ("sigma_min", "sigma_max"):  # PyYAML reads 1e-4 (no dot) as a string in the reference's hydra files
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise UserError(f"noise.{name} must be a finite number, got {value!r}") from None
        _check_field_types(self, "noise")
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


def dataclass_from_dict(cls, values: Any, what: str, unknown_out: dict | None = None):
    """Build dataclass `cls` from a mapping. Unknown fields are an error naming them (`what` says where they came
    from), unless `unknown_out` is given: then they are moved there (a released config.json may carry fields that
    pysedd, like the reference, does not read)."""
    if not isinstance(values, dict):
        raise UserError(f"{what} must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown and unknown_out is None:
        raise UserError(f"unknown field(s) in {what}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if unknown:
        unknown_out.update({k: values[k] for k in unknown})
    return cls(**{k: v for k, v in values.items() if k in known})


def _plain(obj: Any) -> Any:
    """Mappings (an OmegaConf DictConfig, as the reference passes) and sequences as plain dicts and lists."""
    if hasattr(obj, "items") and hasattr(obj, "keys"):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "ListConfig":
        return [_plain(v) for v in obj]
    return obj


@dataclass
class SEDDConfig:
    tokens: int = GPT2_TOKENS
    model: ModelConfig = field(default_factory=ModelConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    # The other sections of the official hydra dump (ngpus, training, data, sampling, eval, optim, ...): pysedd does
    # not interpret them, only carries them through so a config read from the hub is written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)
    # Fields inside model/graph/noise that pysedd does not know (section -> {field: value}), carried through likewise.
    unknown: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.tokens, int) or isinstance(self.tokens, bool) or self.tokens < 2:
            raise UserError(f"tokens must be an integer >= 2, got {self.tokens!r}")
        self.model.validate()
        self.graph.validate()
        self.noise.validate()
        if self.model.scale_by_sigma and self.graph.type != "absorb":
            raise UserError("model.scale_by_sigma is only defined for graph.type='absorb' (set it to false for uniform)")
        m = self.model
        check_size("the SEDD config", self.num_parameters(), {
            "model.n_blocks": (m.n_blocks, MAX_BLOCKS), "model.length": (m.length, MAX_LENGTH)})

    def num_parameters(self) -> int:
        """The exact parameter count of `SEDD(self)`, computed without building it."""
        m, V = self.model, self.vocab_size
        D, C = m.hidden_size, m.cond_dim
        sigma_mlp = 256 * C + C + C * C + C
        block = 2 * D + 3 * D * D + D * D + (D * 4 * D + 4 * D) + (4 * D * D + D) + (C * 6 * D + 6 * D)
        final = D + (D * V + V) + (C * 2 * D + 2 * D)
        return V * D + sigma_mlp + m.n_blocks * block + final

    @property
    def vocab_size(self) -> int:
        """Model output width: the real tokens plus the MASK token for the absorbing graph."""
        return self.tokens + 1 if self.graph.type == "absorb" else self.tokens

    @classmethod
    def preset(cls, name: str, graph: str = "absorb", tokens: int = GPT2_TOKENS, noise: str | None = None,
               **model_overrides: Any) -> "SEDDConfig":
        """A named size with the graph's recipe (uniform: geometric noise, no scale_by_sigma) unless `noise` names
        another schedule."""
        if name not in PRESETS:
            raise UserError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        model = ModelConfig(name=name, **{**PRESETS[name], **model_overrides})
        if graph == "uniform":
            model.scale_by_sigma = False
        noise = noise or ("geometric" if graph == "uniform" else "loglinear")
        return cls(tokens=tokens, model=model, graph=GraphConfig(graph), noise=NoiseConfig(noise))

    @classmethod
    def from_dict(cls, d: Any, source: str = "config") -> "SEDDConfig":
        """The official config (a dict or an OmegaConf DictConfig). Fields of model/graph/noise that pysedd does not
        know are kept in `unknown`, with one warning naming them all."""
        d = _plain(d)
        if not isinstance(d, dict):
            raise UserError(f"a SEDD config must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("model", "graph", "noise") if k not in d]
        if missing:
            raise UserError(f"{source} is missing section(s): {', '.join(missing)}")
        unknown: dict[str, dict[str, Any]] = {"model": {}, "graph": {}, "noise": {}}
        typed = {name: dataclass_from_dict(cls_, d[name], f"config section {name!r}", unknown[name])
                 for name, cls_ in (("model", ModelConfig), ("graph", GraphConfig), ("noise", NoiseConfig))}
        unknown = {k: v for k, v in unknown.items() if v}
        if unknown:
            names = ", ".join(f"{section}.{key}" for section, fields in unknown.items() for key in fields)
            warnings.warn(f"{source}: field(s) pysedd does not use, kept unchanged: {names}", UserWarning, stacklevel=2)
        return cls(tokens=d.get("tokens", GPT2_TOKENS), **typed, unknown=unknown,
                   extra={k: v for k, v in d.items() if k not in TYPED_SECTIONS})

    def to_dict(self) -> dict[str, Any]:
        drop_none = lambda obj: {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}  # noqa: E731
        return {
            **self.extra,
            "tokens": self.tokens,
            "model": {**dataclasses.asdict(self.model), **self.unknown.get("model", {})},
            "graph": {**drop_none(self.graph), **self.unknown.get("graph", {})},
            "noise": {**dataclasses.asdict(self.noise), **self.unknown.get("noise", {})},
        }

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "SEDDConfig":
        return cls.from_dict(read_json(path), str(path))

    def to_json_file(self, path: str | os.PathLike) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, with one clear error for a missing, non-UTF-8 or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
