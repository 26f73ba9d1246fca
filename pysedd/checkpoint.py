"""Training checkpoints that survive kill -9: tensors in safetensors files, everything else in JSON, no pickles.

A checkpoint is a directory ``step_<step:08d>/`` holding model/ema/optimizer/rng ``.safetensors`` files and
``state.json`` (step, data position, optimizer hyper-parameters, scheduler, numpy/python RNG, config, the sha256
of every tensor file, and the sha256 of state.json's own other contents). It is assembled in a hidden temporary
directory, fsynced, and renamed into place (``pysedd.io.atomic_dir``), so a visible checkpoint is complete; the
checksums catch later truncation or bit rot anywhere, state.json included, and ``load_latest`` then falls back to the
previous good checkpoint with a warning.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from pysedd.io import atomic_dir, fsync_file, remove_stale_temps, sha256_file


PREFIX = "step_"


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG the training touches: torch CPU/CUDA (tensors) and numpy/python (JSON)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    json_state = {
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), py_gauss],
    }
    return tensors, json_state


def set_rng_state(tensors: dict[str, torch.Tensor], json_state: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    kind, keys, pos, has_gauss, gauss = json_state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = json_state["python"]
    random.setstate((version, tuple(internal), py_gauss))


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _state_digest(state: dict) -> str:
    """sha256 of state.json's contents other than this digest (canonical JSON: key order does not matter)."""
    rest = {k: v for k, v in state.items() if k != "state_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def save_checkpoint(directory: Path, step: int, model: torch.nn.Module, ema, optimizer, scheduler,
                    extra: dict) -> Path:
    """Writes ``directory/step_<step>`` atomically and returns its path (an existing valid one is kept as is)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{step:08d}"
    if final.exists() and verify(final) is not None:
        return final
    with atomic_dir(final) as tmp:  # a failure (disk full, ...) removes the temporary directory
        opt_tensors, opt_meta = _optimizer_split(optimizer)
        rng_tensors, rng_json = rng_state()
        ema_sd = ema.state_dict()
        save_model(model, str(tmp / "model.safetensors"))
        save_file({str(i): t.contiguous() for i, t in enumerate(ema_sd["shadow_params"])},
                  str(tmp / "ema.safetensors"))
        save_file({k: v.contiguous() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        files = {}
        for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors"):
            fsync_file(tmp / name)
            files[name] = sha256_file(tmp / name)
        state = {
            "step": step,
            "files": files,
            "ema": {"decay": ema_sd["decay"], "num_updates": ema_sd["num_updates"]},
            "optimizer": opt_meta,
            "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
            "rng": rng_json,
            **extra,
        }
        state["state_sha256"] = _state_digest(state)
        (tmp / "state.json").write_text(json.dumps(state))
    return final


def _read_state(path: Path) -> dict | None:
    """state.json of a checkpoint directory when it matches its own checksum and the directory's step, else None."""
    try:
        state = json.loads((path / "state.json").read_text())
        if state.get("state_sha256") != _state_digest(state) or f"{PREFIX}{state['step']:08d}" != path.name:
            return None
        return state
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def verify(path: Path) -> dict | None:
    """The parsed state.json when it and every file of the checkpoint match their checksums, else None."""
    state = _read_state(path)
    try:
        if state is None or not all(sha256_file(path / name) == digest for name, digest in state["files"].items()):
            return None
        return state
    except (OSError, KeyError, TypeError, AttributeError):
        return None


def stored_run(directory: Path) -> tuple[dict, int] | None:
    """(trajectory settings, step) of the newest checkpoint with an intact state.json; None without checkpoints."""
    for path in list_checkpoints(directory):
        state = _read_state(path)
        if state is not None:
            return state.get("trajectory", {}), int(state.get("step", 0))
    return None


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint directories, newest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]), reverse=True)


def prune(directory: Path, keep_last: int) -> None:
    """Deletes all but the newest ``keep_last`` checkpoints and stale temporary directories."""
    for old in list_checkpoints(directory)[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    remove_stale_temps(directory)


def load_latest(directory: Path, model, ema, optimizer, scheduler, device: torch.device) -> dict | None:
    """Restores the newest checkpoint that verifies, warning about each corrupt one skipped; None if there is none."""
    for path in list_checkpoints(directory):
        state = verify(path)
        if state is None:
            warnings.warn(f"checkpoint {path} is incomplete or corrupt (checksum mismatch); trying an older one",
                          RuntimeWarning, stacklevel=2)
            continue
        load_model(model, str(path / "model.safetensors"), strict=True, device=str(device))
        shadow = load_file(str(path / "ema.safetensors"), device=str(device))
        ema.load_state_dict({**state["ema"], "shadow_params": [shadow[str(i)] for i in range(len(shadow))]})
        optimizer.load_state_dict(_optimizer_join(load_file(str(path / "optimizer.safetensors")), state["optimizer"]))
        scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
        set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
        state["path"] = str(path)
        return state
    return None
