"""The result records: the numbers every evaluator writes and the report reads, defined once.

Each evaluation writes its full JSON (settings, provenance, per-sample numbers) plus a ``record`` block made here:

    {"record": {"schema": 1, "evaluation": "diversity", "entries": [{"name": ..., "unique_unigrams": {...}, ...}]}}

The report reads only the record, through `read_entries`, which checks the evaluation, the schema version and every
field of every entry, and raises a `UserError` naming the file and the field when anything is missing or malformed.
A setting that changes a metric (a repetition window of 50 instead of 100) changes a field's value (``window``),
never a key, so the report cannot miss it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

SCHEMA = 1


@dataclass(frozen=True)
class Stat:
    """A mean with its spread (std over samples or seeds; None when the number has none)."""

    mean: float
    std: float | None = None


@dataclass(frozen=True)
class ZeroShot:
    """Table 1: perplexity of one dataset, mean-then-exp over all scored tokens (SEDD: an ELBO bound)."""

    name: str
    ppl: float
    exp_then_mean: float
    bound: bool


@dataclass(frozen=True)
class LmEval:
    """Table 2: one model's lm-eval metrics, {task: {"acc": .., "acc_norm": .., "perplexity": ..}} (fractions)."""

    name: str
    tasks: dict[str, dict[str, float]]


@dataclass(frozen=True)
class GenPPL:
    """Table 3: the judge's perplexity of one set of samples (aggregation `mode`) and their unigram entropy."""

    name: str
    gen_ppl: float
    mode: str
    entropy: Stat


@dataclass(frozen=True)
class Diversity:
    """Table 4: per-sample unique-unigram fraction, unigram entropy and repetition rate in a `window`.

    `repetition` is the paper's column (`ngram`-grams seen in the window before), `repetition_literal` the caption's
    literal reading (single tokens); docs/evaluation-fidelity.md says why they differ."""

    name: str
    unique_unigrams: Stat
    entropy: Stat
    repetition: Stat
    repetition_literal: Stat
    window: int
    ngram: int


@dataclass(frozen=True)
class Mauve:
    """Tables 5-6: MAUVE over seeds and the judge's perplexity of the continuations (mean-then-exp)."""

    name: str
    setting: str
    mauve: Stat
    continuation_ppl: float


@dataclass(frozen=True)
class Latency:
    """Table 7 / Figure 1: one timed configuration (model 'sedd' at `steps`, or 'gpt2' with its KV cache)."""

    name: str
    model: str
    sampler: str
    steps: int | None
    latency: Stat
    throughput: Stat
    length: int
    batch_size: int
    parameters: int


@dataclass(frozen=True)
class FrontierPoint:
    """The quality-latency frontier (`pysedd bench frontier`): one sampler (`name`, e.g. 'T=16', 'k=4', 'top-p 0.95',
    within its `family`) drawing `num_samples` samples of `length` tokens in batches of `batch_size` on `device`:
    network calls in all (`nfe`), seconds per sample, the judge's generative perplexity and the unigram entropy."""

    name: str
    family: str
    model: str
    nfe: int
    latency: float
    gen_ppl: float
    entropy: Stat
    num_samples: int
    length: int
    batch_size: int
    device: str
    judge: str


RECORDS: dict[str, type] = {"zero-shot": ZeroShot, "lm-eval": LmEval, "gen-ppl": GenPPL, "diversity": Diversity,
                            "mauve": Mauve, "latency": Latency, "frontier": FrontierPoint}


def stat(d: dict) -> Stat:
    """A Stat from an evaluator's {"mean": .., "std": ..}."""
    return Stat(float(d["mean"]), None if d.get("std") is None else float(d["std"]))


def record(evaluation: str, entries: list) -> dict:
    """The ``record`` block of a result JSON."""
    cls = RECORDS[evaluation]
    if not all(isinstance(e, cls) for e in entries):
        raise TypeError(f"a {evaluation} record holds {cls.__name__} entries")
    return {"schema": SCHEMA, "evaluation": evaluation, "entries": [dataclasses.asdict(e) for e in entries]}


def _check(value: Any, kind: Any, where: str) -> Any:
    """`value` converted to `kind` (a field's annotation), or a UserError naming `where`."""
    kind = kind.replace(" ", "") if isinstance(kind, str) else kind
    if kind in ("float", "int", "int|None"):
        if value is None and kind == "int|None":
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        if kind.startswith("int"):
            if value != int(value):
                raise UserError(f"{where}: expected an integer, got {value!r}")
            return int(value)
        if math.isnan(value):
            raise UserError(f"{where}: is NaN")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true/false, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if kind == "Stat":
        if not isinstance(value, dict) or "mean" not in value:
            raise UserError(f"{where}: expected {{mean, std}}, got {value!r}")
        std = value.get("std")
        return Stat(_check(value["mean"], "float", f"{where}.mean"),
                    None if std is None else _check(std, "float", f"{where}.std"))
    if kind == "dict[str,dict[str,float]]":
        if not isinstance(value, dict) or not value:
            raise UserError(f"{where}: expected a non-empty mapping of tasks, got {value!r}")
        out = {}
        for task, metrics in value.items():
            if not isinstance(metrics, dict):
                raise UserError(f"{where}.{task}: expected a mapping of metrics, got {metrics!r}")
            out[task] = {k: _check(v, "float", f"{where}.{task}.{k}") for k, v in metrics.items()}
        return out
    raise TypeError(f"no check for field type {kind!r}")


def parse_entry(cls: type, data: Any, where: str):
    """One record entry of type `cls`, every field present and of its type."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected an object, got {type(data).__name__}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            raise UserError(f"{where}: missing field '{f.name}'")
        values[f.name] = _check(data[f.name], f.type, f"{where}.{f.name}")
    return cls(**values)


def read_entries(path: str | Path, evaluation: str) -> list:
    """The checked record entries of the result file `path`, which must be a `evaluation` result."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"result {path} is missing (rerun the stage that writes it)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    rec = data.get("record") if isinstance(data, dict) else None
    if not isinstance(rec, dict):
        raise UserError(f"{path}: no 'record' block (written by an older pysedd? rerun its stage)")
    if rec.get("schema") != SCHEMA:
        raise UserError(f"{path}: record schema {rec.get('schema')!r}, this pysedd reads {SCHEMA}; rerun its stage")
    if rec.get("evaluation") != evaluation:
        raise UserError(f"{path}: a {rec.get('evaluation')!r} result where a {evaluation!r} result was expected")
    entries = rec.get("entries")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: record has no entries")
    cls = RECORDS[evaluation]
    return [parse_entry(cls, e, f"{path}: record.entries[{i}]") for i, e in enumerate(entries)]


def read_one(path: str | Path, evaluation: str):
    """The single entry of a per-setting result file (the workflow writes one entry per file)."""
    entries = read_entries(path, evaluation)
    if len(entries) != 1:
        raise UserError(f"{path}: expected one {evaluation} entry, found {len(entries)}")
    return entries[0]

