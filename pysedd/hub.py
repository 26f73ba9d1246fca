"""Where a model spec points, and reading SEDD checkpoints from there.

`locate(spec)` understands every input form pysedd accepts (it only reads configs, never builds a model):
  * a hub repo id such as "louaaron/sedd-small" or "gpt2" (resolved through huggingface_hub, its local cache offline)
  * a model directory: config.json + model.safetensors (what save_pretrained writes) or pytorch_model.bin (the
    released louaaron/sedd-* repos; loaded with weights_only=True), or a transformers causal-LM directory
  * a pysedd run directory (`pysedd train --out RUN`): RUN/export/ when it exists, else the EMA weights of the newest
    checkpoint under RUN/checkpoints/ whose checksums verify
  * a reference run directory: .hydra/config.yaml + checkpoints-meta/checkpoint.pth or checkpoints/checkpoint_*.pth
    (its EMA weights are used)
`load_sedd` builds the SEDD of a location. Every tensor read is checked (float32, finite) and state dicts strictly
(every missing, unexpected or mis-shaped key is named; the one tolerated difference is the rotary buffer
`rotary_emb.inv_freq`, which is recomputed). Malformed files give one clear error, never a library traceback.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import SEDDConfig, read_json
from .errors import UserError
from .io import atomic_path

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAME = "pytorch_model.bin"
OPTIONAL_KEYS = {"rotary_emb.inv_freq"}
KINDS = ("sedd", "gpt2")
SEDD_DTYPES = (torch.float32,)  # what pysedd and the reference save; anything else is not a SEDD checkpoint


@dataclass
class Location:
    """What a model spec points at. form: hub | directory | run-export | run-checkpoint | reference-run."""

    spec: str
    form: str
    kind: str | None  # sedd | gpt2; None for a hub id whose config.json is not reachable
    path: Path | None  # the directory read (export/, the checkpoint directory, the run); None for a hub id
    config: dict | None = None  # config.json of `path`; for run-checkpoint the training options (+ seq_len)

    @property
    def local(self) -> bool:
        return self.form != "hub"


def config_kind(config: Any, where: str) -> str:
    """sedd (model/graph/noise sections) or gpt2 (a transformers config: any causal LM, GPT-2, Pythia, ...)."""
    if isinstance(config, dict) and "model_type" in config:
        return "gpt2"
    if isinstance(config, dict) and all(isinstance(config.get(k), dict) for k in ("model", "graph", "noise")):
        return "sedd"
    raise UserError(f"{where} is neither a SEDD nor a transformers config (it has no model/graph/noise sections and "
                    "no model_type)")


def _has_weights(path: Path) -> bool:
    return any(path.glob("*.safetensors")) or (path / PICKLE_NAME).is_file()


def _run_location(spec: str, run: Path) -> Location:
    """A pysedd run directory: export/ when present (a broken export is an error, not a silent fallback), else the
    newest checkpoint that verifies."""
    export = run / "export"
    if export.is_dir():
        if not (export / CONFIG_NAME).is_file():
            raise UserError(f"{export} has no {CONFIG_NAME}: the export is incomplete (was the run killed while "
                            "exporting?); delete export/ to load the newest checkpoint instead")
        config = read_json(export / CONFIG_NAME)
        return Location(spec, "run-export", config_kind(config, str(export / CONFIG_NAME)), export, config)
    from .checkpoint import list_checkpoints, verify

    for ckpt in list_checkpoints(run / "checkpoints"):
        state = verify(ckpt)
        if state is not None and isinstance(state.get("config"), dict) and state["config"].get("model") in KINDS:
            return Location(spec, "run-checkpoint", state["config"]["model"], ckpt,
                            {**state["config"], "seq_len": state.get("seq_len"), "step": state.get("step"),
                             "ema_sha256": state["files"].get("ema.safetensors")})
    raise UserError(f"run directory {run} has no export/ and no checkpoint under checkpoints/ that verifies")


def _is_run(path: Path, config: Any) -> bool:
    """A `pysedd train` output: its config.json holds the flat training options (model: sedd | gpt2)."""
    return isinstance(config, dict) and config.get("model") in KINDS and "size" in config


def _looks_like_hub_id(spec: str) -> bool:
    return spec.count("/") <= 1 and not spec.startswith((".", "/", "~")) and bool(spec) and not spec.endswith("/")


def locate(spec: str | os.PathLike, revision: str | None = None) -> Location:
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / ".hydra" / "config.yaml").is_file():
            return Location(spec, "reference-run", "sedd", path)
        if (path / CONFIG_NAME).is_file():
            config = read_json(path / CONFIG_NAME)
            if _is_run(path, config):
                return _run_location(spec, path)
            return Location(spec, "directory", config_kind(config, str(path / CONFIG_NAME)), path, config)
        if (path / "export").is_dir() or (path / "checkpoints").is_dir():
            return _run_location(spec, path)
        if _has_weights(path):
            raise UserError(f"{path} holds weights but no {CONFIG_NAME}: a model directory needs the {CONFIG_NAME} "
                            "written beside its weights (save_pretrained writes both)")
        raise UserError(f"{path} holds no model: expected {CONFIG_NAME} + weights, a pysedd run directory (export/ "
                        "or checkpoints/) or a reference run directory (.hydra/config.yaml)")
    if path.exists():
        raise UserError(f"{path} is a file; pass the directory that holds {CONFIG_NAME} and the weights")
    if not _looks_like_hub_id(spec):
        raise UserError(f"no such model directory: {spec}")
    config_path = _hub_file(spec, CONFIG_NAME, revision, required=False)
    if config_path is None:
        return Location(spec, "hub", None, None)
    config = read_json(config_path)
    return Location(spec, "hub", config_kind(config, f"hub:{spec}/{CONFIG_NAME}"), config_path.parent, config)


# -- the hub ----------------------------------------------------------------------------------------------------
def _offline_error(repo_id: str) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub is not reachable"
    return UserError(
        f"cannot load {repo_id!r}: it is not a local directory, {why}, and it is not in the local hub cache. "
        "Download it on a connected machine (huggingface-cli download ...) or pass a local directory.")


def _hub_file(repo_id: str, name: str, revision: str | None, required: bool = True) -> Path | None:
    """A file of a hub repo (the local cache when offline); None when it is not available and not `required`."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError, \
        RepositoryNotFoundError

    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, name, revision=revision))
    except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: test it first
        if required:
            raise _offline_error(repo_id) from None
    except EntryNotFoundError:
        if required:
            raise UserError(f"hub repo {repo_id} has no {name}") from None
    except RepositoryNotFoundError:
        raise UserError(f"hub repo {repo_id!r} does not exist (or is private)") from None
    except HFValidationError:
        raise UserError(f"{repo_id!r} is neither a local directory nor a valid hub repo id") from None
    return None


def hub_commit(location: Location) -> str | None:
    """The commit of a cached hub snapshot (the folder name under snapshots/), when it is known."""
    return location.path.name if location.path is not None and location.path.parent.name == "snapshots" else None


def _hub_weights(location: Location, revision: str | None) -> Path:
    """config.json's directory with the weights downloaded: safetensors first, then the pickled .bin."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if location.path is None:
        raise _offline_error(location.spec)
    for name in (SAFETENSORS_NAME, PICKLE_NAME):
        try:
            return Path(huggingface_hub.hf_hub_download(location.spec, name, revision=revision))
        except LocalEntryNotFoundError:
            if name == PICKLE_NAME:
                raise _offline_error(location.spec) from None
        except EntryNotFoundError:
            continue
    raise UserError(f"hub repo {location.spec} has neither {SAFETENSORS_NAME} nor {PICKLE_NAME}")


# -- reading tensors ----------------------------------------------------------------------------------------------
def check_tensors(state: dict[str, torch.Tensor], source: str, dtypes=SEDD_DTYPES) -> None:
    """Every tensor has one of `dtypes` and only finite values; the error names the first offender."""
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise UserError(f"{source}: entry {name!r} is not a tensor ({type(t).__name__})")
        if t.dtype not in dtypes:
            allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise UserError(f"{source}: tensor {name!r} has dtype {str(t.dtype).replace('torch.', '')}; expected "
                            f"{allowed}")
        if not bool(torch.isfinite(t).all()):
            raise UserError(f"{source}: tensor {name!r} holds NaN or infinite values")


def read_safetensors(path: Path, dtypes=SEDD_DTYPES) -> dict[str, torch.Tensor]:
    """A safetensors file, checked; a bad header, bad offsets, truncation or an empty file is one clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not a valid safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    check_tensors(state, str(path), dtypes)
    return state


def check_safetensors_header(path: Path, dtypes) -> None:
    """Check a safetensors file's header (parse, offsets, dtypes) without reading its tensors (for files that another
    library loads)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                dtype = f.get_slice(name).get_dtype()
                if dtype not in dtypes:
                    raise UserError(f"{path}: tensor {name!r} has dtype {dtype}; expected {', '.join(dtypes)}")
    except UserError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not a valid safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _read_pickle(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file or a pickle that needs code execution
        raise UserError(f"cannot load {path} safely (weights_only=True): {str(e).splitlines()[0] if str(e) else e}") from None


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = _read_pickle(path)
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    check_tensors(obj, str(path))
    return obj


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept DDP ('module.') and torch.compile ('_orig_mod.') prefixes."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise one error naming every missing, unexpected and mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state) - OPTIONAL_KEYS)
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape) and k not in OPTIONAL_KEYS
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {'; '.join(shapes)}")
    if problems:
        raise UserError(f"checkpoint {source} does not match the model config: " + " | ".join(problems))


def load_state_dict_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    state = _strip_prefixes(state)
    check_state_dict(model, state, source)
    state = {k: v for k, v in state.items() if k not in OPTIONAL_KEYS}
    model.load_state_dict(state, strict=False)  # only OPTIONAL_KEYS can be absent after the check above


def copy_ema(model: torch.nn.Module, shadow: list[torch.Tensor], source: str) -> None:
    """Put EMA shadow tensors (in the order of the model's trainable parameters) into the model."""
    params = [p for p in model.parameters() if p.requires_grad]
    if len(shadow) != len(params):
        raise UserError(f"{source}: EMA has {len(shadow)} tensors, the model has {len(params)} parameters")
    bad = [i for i, (p, s) in enumerate(zip(params, shadow)) if tuple(p.shape) != tuple(s.shape)]
    if bad:
        raise UserError(f"{source}: EMA tensor {bad[0]} has shape {tuple(shadow[bad[0]].shape)}, the parameter "
                        f"{tuple(params[bad[0]].shape)}")
    with torch.no_grad():
        for p, s in zip(params, shadow):
            p.copy_(s)


def load_run_ema(model: torch.nn.Module, location: Location, dtypes=SEDD_DTYPES) -> None:
    """The EMA weights of a verified pysedd training checkpoint (ema.safetensors: one tensor per trainable
    parameter, keyed by its index)."""
    path = location.path / "ema.safetensors"
    shadow = read_safetensors(path, dtypes)
    if set(shadow) != {str(i) for i in range(len(shadow))}:
        raise UserError(f"{path}: keys must be 0..{len(shadow) - 1}")
    copy_ema(model, [shadow[str(i)] for i in range(len(shadow))], str(path))


# -- SEDD ----------------------------------------------------------------------------------------------------------
def run_config(location: Location) -> dict:
    """The training options of a run-checkpoint location, checked to name a model that can be rebuilt."""
    opts = location.config
    if not isinstance(opts.get("seq_len"), int):
        raise UserError(f"{location.path}/state.json does not record seq_len; cannot rebuild the model")
    return opts


def sedd_config_of_run(location: Location) -> SEDDConfig:
    """The SEDDConfig a `pysedd train` run built: its init_from model's config, else the preset with its overrides."""
    opts = run_config(location)
    if opts.get("init_from"):
        base = locate(opts["init_from"])
        if base.kind != "sedd" or base.form not in ("directory", "hub", "run-export"):
            raise UserError(f"{location.path}: init_from {opts['init_from']!r} is not a SEDD model directory or hub id")
        if base.config is None:
            raise _offline_error(base.spec)
        return SEDDConfig.from_dict(base.config, f"{base.spec}/{CONFIG_NAME}")
    overrides = {k: opts[k] for k in ("dropout", "hidden_size", "n_blocks", "n_heads") if opts.get(k) is not None}
    return SEDDConfig.preset(opts.get("size", "tiny"), graph=opts.get("graph", "absorb"), noise=opts.get("noise"),
                             length=opts["seq_len"], **overrides)


def reference_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a reference run is loaded from: checkpoints-meta/checkpoint.pth, else the highest-numbered
    checkpoints/checkpoint_<n>.pth (numerically: 26 after 9)."""
    numbered = [p for p in (run_dir / "checkpoints").glob("checkpoint_*.pth") if p.stem.split("_")[-1].isdigit()]
    ckpts = [run_dir / "checkpoints-meta" / "checkpoint.pth"] + sorted(numbered, key=lambda p: -int(p.stem.split("_")[-1]))
    ckpt_path = next((p for p in ckpts if p.is_file()), None)
    if ckpt_path is None:
        raise UserError(f"run directory {run_dir} has no checkpoints-meta/checkpoint.pth or checkpoints/checkpoint_*.pth")
    return ckpt_path


def _reference_run(cls, run_dir: Path):
    """A run of the reference training code: hydra config + .pth checkpoint with EMA shadow params."""
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{run_dir}/.hydra/config.yaml is not valid YAML: {str(e).splitlines()[0]}") from None
    config = SEDDConfig.from_dict(cfg, f"{run_dir}/.hydra/config.yaml")
    ckpt_path = reference_checkpoint(run_dir)
    ckpt = _read_pickle(ckpt_path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{ckpt_path} does not hold a reference checkpoint (a dict with 'model')")
    check_tensors(ckpt["model"], f"{ckpt_path} (model)")
    model = cls(config)
    load_state_dict_strict(model, ckpt["model"], str(ckpt_path))
    ema = ckpt.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if shadow is not None:
        check_tensors({str(i): s for i, s in enumerate(shadow)}, f"{ckpt_path} (EMA)")
        copy_ema(model, list(shadow), str(ckpt_path))
    return model


def load_sedd(cls, location: Location, revision: str | None = None):
    """The SEDD model at `location`, on the CPU, in eval mode."""
    if location.kind == "gpt2":
        raise UserError(f"{location.spec} holds a transformers causal LM (GPT-2 family), not a SEDD model")
    if location.form == "reference-run":
        return _reference_run(cls, location.path).eval()
    if location.form == "run-checkpoint":
        model = cls(sedd_config_of_run(location))
        load_run_ema(model, location)
        return model.eval()
    if location.form == "hub":
        weights = _hub_weights(location, revision)
    else:
        weights = next((location.path / n for n in (SAFETENSORS_NAME, PICKLE_NAME) if (location.path / n).is_file()), None)
        if weights is None:
            raise UserError(f"{location.path} has neither {SAFETENSORS_NAME} nor {PICKLE_NAME}")
    source = f"hub:{location.spec}" if location.form == "hub" else str(location.path)
    model = cls(SEDDConfig.from_dict(location.config, f"{source}/{CONFIG_NAME}"))
    load_state_dict_strict(model, _load_weights_file(weights), f"{source}/{weights.name}")
    return model.eval()


def load_pretrained(cls, path_or_hub_id, *, device="cpu", revision=None):
    return load_sedd(cls, locate(path_or_hub_id, revision), revision).to(device)


def save_pretrained(model, directory) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / SAFETENSORS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "producer": "pysedd"})
    model.config.to_json_file(directory / CONFIG_NAME)
