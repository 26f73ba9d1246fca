"""Reading and writing SEDD checkpoints: local directories, Hugging Face hub repos, and training run directories.

Layouts understood by `load_pretrained`:
  * config.json + model.safetensors            (what save_pretrained writes)
  * config.json + pytorch_model.bin            (the released louaaron/sedd-* repos; loaded with weights_only=True)
  * <run>/.hydra/config.yaml + checkpoints-meta/checkpoint.pth or checkpoints/checkpoint_*.pth
                                               (a run of the reference training code; the EMA weights are used)
  * a hub repo id such as "louaaron/sedd-small" (resolved through huggingface_hub)
State dicts are checked strictly: every missing, unexpected or mis-shaped key is named. The one tolerated
difference is the rotary buffer `rotary_emb.inv_freq`, which is recomputed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .config import SEDDConfig
from .errors import UserError
from .io import atomic_path

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAME = "pytorch_model.bin"
OPTIONAL_KEYS = {"rotary_emb.inv_freq"}


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file or a pickle that needs code execution
        raise UserError(f"cannot load {path} safely (weights_only=True): {e}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a state dict (got {type(obj).__name__})")
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


def _resolve_hub(repo_id: str, revision: str | None) -> Path:
    """Download config.json and the weights of a hub repo; safetensors first, then the pickled .bin."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        config_path = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision))
        for name in (SAFETENSORS_NAME, PICKLE_NAME):
            try:
                hf_hub_download(repo_id, name, revision=revision)
                break
            except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: test it first
                if name == SAFETENSORS_NAME:
                    continue
                raise
            except EntryNotFoundError:
                continue
        else:
            raise UserError(f"hub repo {repo_id} has neither {SAFETENSORS_NAME} nor {PICKLE_NAME}")
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub is not reachable"
        raise UserError(
            f"cannot load {repo_id!r}: it is not a local directory, {why}, and it is not in the local hub cache. "
            "Download it on a connected machine (huggingface-cli download ...) or pass a local directory."
        ) from None
    except RepositoryNotFoundError:
        raise UserError(f"hub repo {repo_id!r} does not exist (or is private)") from None
    return config_path.parent


def _load_run_directory(cls, run_dir: Path, device):
    """A run of the reference training code: hydra config + .pth checkpoint with EMA shadow params."""
    import yaml

    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    config = SEDDConfig.from_dict(cfg)
    numbered = [p for p in (run_dir / "checkpoints").glob("checkpoint_*.pth") if p.stem.split("_")[-1].isdigit()]
    ckpts = [run_dir / "checkpoints-meta" / "checkpoint.pth"] + sorted(numbered, key=lambda p: -int(p.stem.split("_")[-1]))
    ckpt_path = next((p for p in ckpts if p.is_file()), None)
    if ckpt_path is None:
        raise UserError(f"run directory {run_dir} has no checkpoints-meta/checkpoint.pth or checkpoints/checkpoint_*.pth")
    ckpt = _load_weights_file(ckpt_path)
    model = cls(config)
    load_state_dict_strict(model, ckpt["model"], str(ckpt_path))
    shadow = ckpt.get("ema", {}).get("shadow_params")
    if shadow is not None:
        params = [p for p in model.parameters() if p.requires_grad]
        if len(shadow) != len(params):
            raise UserError(f"{ckpt_path}: EMA has {len(shadow)} tensors, model has {len(params)} parameters")
        with torch.no_grad():
            for p, s in zip(params, shadow):
                p.copy_(s)
    return model.to(device).eval()


def load_pretrained(cls, path_or_hub_id, *, device="cpu", revision=None):
    path = Path(path_or_hub_id)
    if path.is_dir() and (path / ".hydra" / "config.yaml").is_file():
        return _load_run_directory(cls, path, device)
    if path.is_dir():
        directory, source = path, str(path)
    elif path.exists():
        raise UserError(f"{path} is a file; pass the directory that holds {CONFIG_NAME} and the weights")
    elif str(path_or_hub_id).count("/") == 1 and not str(path_or_hub_id).startswith((".", "/", "~")):
        directory, source = _resolve_hub(str(path_or_hub_id), revision), f"hub:{path_or_hub_id}"
    else:
        raise UserError(f"no such checkpoint directory: {path}")

    if not (directory / CONFIG_NAME).is_file():
        raise UserError(f"{source} has no {CONFIG_NAME}")
    config = SEDDConfig.from_json(directory / CONFIG_NAME)
    weights = next((directory / n for n in (SAFETENSORS_NAME, PICKLE_NAME) if (directory / n).is_file()), None)
    if weights is None:
        raise UserError(f"{source} has neither {SAFETENSORS_NAME} nor {PICKLE_NAME}")
    model = cls(config)
    load_state_dict_strict(model, _load_weights_file(weights), f"{source}/{weights.name}")
    return model.to(device).eval()


def save_pretrained(model, directory) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / SAFETENSORS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "producer": "pysedd"})
    model.config.to_json_file(directory / CONFIG_NAME)
