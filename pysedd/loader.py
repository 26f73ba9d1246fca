"""The one way pysedd loads a model: every command, evaluation, bench script and workflow job goes through `load`.

spec (+ optional kind, device, dtype) -> LoadedModel: the model in eval mode, its graph and noise (SEDD), its kind
(sedd | gpt2, where gpt2 means any transformers causal LM: GPT-2, Pythia, ...), its context length and a fingerprint
that identifies the weights in result files. A spec is one of (see pysedd.hub.locate):
  * a hub id (louaaron/sedd-small, gpt2, EleutherAI/pythia-160m; offline: the local hub cache)
  * a model directory (SEDD save_pretrained / released layout, or a transformers save_pretrained directory)
  * a pysedd run directory (export/, else the EMA weights of the newest verified checkpoint)
  * a reference SEDD run directory (.hydra/config.yaml + checkpoints)
  * a size preset name (tiny, small, ...; SEDD or GPT-2 with random weights, for smoke tests and latency; needs kind)
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .hub import (KINDS, Location, check_safetensors_header, hub_commit, load_run_ema, load_sedd, locate,
                  reference_checkpoint, run_config)
from .io import sha256_file

WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".yaml")
AR_FILE_DTYPES = ("F32", "F16", "BF16")  # causal LMs are published in these (Pythia in fp16); pysedd writes F32


@dataclass
class LoadedModel:
    """A SEDD (with its graph and noise) or an autoregressive GPT-2-style model, plus what identifies it."""

    kind: str  # "sedd" | "gpt2"
    model: torch.nn.Module
    source: str
    fingerprint: dict
    max_length: int
    graph: Any = None
    noise: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check_length(self, length: int, what: str) -> None:
        """Refuse sequences longer than the positions the model was built (and trained) for."""
        if length > self.max_length:
            raise UserError(f"{what} {length} is longer than the model's context ({self.max_length} positions) of "
                            f"{self.source}")


# -- devices ---------------------------------------------------------------------------------------------------------
def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_device(name: str | torch.device | None) -> torch.device:
    """A torch.device from a name (None: cuda when available), with one clear error for a bad or absent device."""
    if isinstance(name, torch.device):
        device = name
    else:
        try:
            device = torch.device(name or default_device())
        except (RuntimeError, TypeError, ValueError):
            raise UserError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"--device {name}: pysedd runs on cpu or cuda")
    return device


# -- fingerprints ----------------------------------------------------------------------------------------------------
def fingerprint_path(path: str | os.PathLike) -> dict:
    """sha256 of a file, or of every model/config file directly inside a directory."""
    path = Path(path)
    if path.is_file():
        return {"path": str(path.resolve()), "sha256": sha256_file(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix in WEIGHT_SUFFIXES)
    return {"path": str(path.resolve()), "sha256": {p.name: sha256_file(p) for p in files}}


def _fingerprint(location: Location, revision: str | None) -> dict:
    if location.form == "hub":
        return {"hub_id": location.spec, "revision": revision or "main", "commit": hub_commit(location)}
    if location.form == "run-checkpoint":
        return {"path": str(location.path.resolve()), "step": location.config.get("step"),
                "sha256": {"ema.safetensors": location.config.get("ema_sha256")}}
    if location.form == "reference-run":
        return {**fingerprint_path(reference_checkpoint(location.path)), "run": str(location.path.resolve())}
    return fingerprint_path(location.path)


# -- kinds -----------------------------------------------------------------------------------------------------------
def _preset(spec: str) -> bool:
    from .ar import GPT2_PRESETS
    from .config import PRESETS

    return (spec in PRESETS or spec in GPT2_PRESETS) and not Path(spec).exists()


def detect_kind(spec: str) -> str:
    """sedd or gpt2, from the config the spec points at (a hub id whose config is not cached: from its name)."""
    spec = str(spec)
    if _preset(spec):
        raise UserError(f"{spec!r} is a size preset (random weights): pass --kind sedd or --kind gpt2")
    location = locate(spec)
    return location.kind or ("sedd" if "sedd" in spec.lower() else "gpt2")


# -- loading ---------------------------------------------------------------------------------------------------------
def load(spec: str | os.PathLike, kind: str | None = None, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None, *, length: int | None = None, revision: str | None = None) -> LoadedModel:
    """Load `spec` in eval mode on `device` (default: cuda when available). `length`: the context of a random-init
    preset (SEDD default: the preset's; GPT-2: 1024). `dtype`: GPT-2 only (SEDD runs in float32, with bf16 autocast
    on CUDA)."""
    spec = str(spec)
    if kind is not None and kind not in KINDS:
        raise UserError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")
    device = pick_device(device)
    if kind == "sedd" and dtype not in (None, torch.float32):
        raise UserError(f"SEDD runs in float32 (bf16 autocast on CUDA); dtype {dtype} is not supported")
    if _preset(spec):
        if kind is None:
            raise UserError(f"{spec!r} is a size preset (random weights): pass --kind sedd or --kind gpt2")
        lm = _preset_model(spec, kind, length)
    else:
        location = locate(spec, revision)
        found = location.kind or ("sedd" if "sedd" in spec.lower() else "gpt2")
        if kind is not None and location.kind is not None and kind != location.kind:
            raise UserError(f"{spec} holds a {location.kind} model, not {kind}")
        kind = kind or found
        lm = _load_sedd(location, revision) if kind == "sedd" else _load_ar(location, revision)
    lm.model = lm.model.to(device=device, dtype=dtype if kind == "gpt2" else None).eval()
    return lm


def _preset_model(name: str, kind: str, length: int | None) -> LoadedModel:
    if kind == "sedd":
        from .config import SEDDConfig
        from .model import SEDD

        model = SEDD(SEDDConfig.preset(name, **({"length": length} if length else {})))
        graph, noise = model.graph_and_noise()
        return LoadedModel("sedd", model, name, {"preset": name, "random_init": True}, model.config.model.length,
                           graph, noise, {"config": model.config.to_dict(), "form": "preset"})
    from transformers import GPT2LMHeadModel

    from .ar import gpt2_config

    positions = length or 1024
    model = GPT2LMHeadModel(gpt2_config(name, n_positions=positions))
    return LoadedModel("gpt2", model, name, {"preset": name, "random_init": True}, positions,
                       extra={"n_parameters": sum(p.numel() for p in model.parameters()), "form": "preset"})


def _load_sedd(location: Location, revision: str | None) -> LoadedModel:
    from .model import SEDD

    model = load_sedd(SEDD, location, revision)
    graph, noise = model.graph_and_noise()
    return LoadedModel("sedd", model, location.spec, _fingerprint(location, revision), model.config.model.length,
                       graph, noise, {"config": model.config.to_dict(), "form": location.form})


def _ar_size_check(config: dict, where: str) -> None:
    """Bound a transformers config's size before transformers allocates it (field names of GPT-2 and the rest)."""
    from .config import MAX_BLOCKS, MAX_LENGTH, check_size

    def field_of(*names, default=None):
        value = next((config[n] for n in names if config.get(n) is not None), default)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UserError(f"{where}: {names[0]} must be a positive integer, got {value!r}")
        return value

    D = field_of("hidden_size", "n_embd", "d_model", default=1)
    L = field_of("num_hidden_layers", "n_layer", default=1)
    V = field_of("vocab_size", default=1)
    P = field_of("max_position_embeddings", "n_positions", default=0)
    inner = field_of("intermediate_size", "n_inner", default=None) or 4 * D
    check_size(where, 2 * V * D + P * D + L * (4 * D * D + 2 * D * inner),
               {"layers": (L, MAX_BLOCKS), "positions": (P, MAX_LENGTH)})


def _check_finite(model: torch.nn.Module, source: str) -> None:
    for name, p in model.named_parameters():
        if not p.is_floating_point():
            raise UserError(f"{source}: parameter {name!r} has dtype {p.dtype}; expected a floating-point type")
        if not bool(torch.isfinite(p).all()):
            raise UserError(f"{source}: parameter {name!r} holds NaN or infinite values")


def _load_ar(location: Location, revision: str | None) -> LoadedModel:
    from .ar import load_ar_model

    if location.form == "run-checkpoint":
        model = _ar_of_run(location)
        load_run_ema(model, location)
    else:
        if location.config is not None:
            _ar_size_check(location.config, f"{location.spec}/config.json")
        if location.local:
            for file in sorted(location.path.glob("*.safetensors")):
                check_safetensors_header(file, AR_FILE_DTYPES)
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar per model would bury pysedd's own messages
        try:
            model = load_ar_model(str(location.path) if location.local else location.spec)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:  # e.g. a corrupt pytorch_model.bin
            raise UserError(f"cannot load a causal LM from {location.spec}: {str(e).splitlines()[0]}") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
    _check_finite(model, location.spec)
    fingerprint = _fingerprint(location, revision)
    if location.form == "hub" and fingerprint["commit"] is None:
        fingerprint["commit"] = getattr(model.config, "_commit_hash", None)
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    return LoadedModel("gpt2", model, location.spec, fingerprint, int(context),
                       extra={"n_parameters": sum(p.numel() for p in model.parameters()), "form": location.form})


def _ar_of_run(location: Location) -> torch.nn.Module:
    """The causal LM a `pysedd train --model gpt2` run built (before its EMA weights are put in)."""
    from transformers import AutoConfig, AutoModelForCausalLM, GPT2LMHeadModel

    opts = run_config(location)
    if opts.get("init_from"):
        base = locate(opts["init_from"])
        if base.kind != "gpt2":
            raise UserError(f"{location.path}: init_from {opts['init_from']!r} is not a causal LM")
        if base.config is not None:
            _ar_size_check(base.config, f"{base.spec}/config.json")
        config = AutoConfig.from_pretrained(str(base.path) if base.local else base.spec)
        return AutoModelForCausalLM.from_config(config)
    from .ar import matching_gpt2_config

    overrides = {k: opts[k] for k in ("dropout", "hidden_size", "n_blocks", "n_heads") if opts.get(k) is not None}
    return GPT2LMHeadModel(matching_gpt2_config(opts.get("size", "tiny"), opts["seq_len"], **overrides))
