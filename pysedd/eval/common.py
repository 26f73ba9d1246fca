"""What every evaluation shares: the model loader (re-exported from pysedd.loader), seeds, AR token scoring, the shard
cache that makes long runs resumable, and writing results (JSON + markdown) atomically."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..io import atomic_write_text, sha256_file
# The one model loader (pysedd.loader), re-exported for the evaluations that import it from here.
from ..loader import LoadedModel, default_device, load as load_model  # noqa: F401

# -- seeds -------------------------------------------------------------------------------------------------

def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def derived_seed(seed: int, *parts) -> int:
    """A 31-bit seed from a base seed and what identifies one unit of work (a chunk index, a request's text), so its
    random numbers depend on neither the order nor the batching of the work, and units never share a stream."""
    digest = hashlib.sha256("\x00".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def environment() -> dict:
    """Library versions that can move a number."""
    import importlib.metadata as md

    versions = {}
    for name in ("pysedd", "torch", "transformers", "lm_eval", "mauve-text", "datasets", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    if "pysedd" not in versions:
        from .. import __version__

        versions["pysedd"] = __version__
    return {"versions": versions, "python": platform.python_version(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# -- autoregressive scoring ---------------------------------------------------------------------------------------

def ar_token_nll(model: torch.nn.Module, ids: torch.Tensor, max_length: int | None = None, stride: int | None = None) -> torch.Tensor:
    """NLL (nats, float64) of tokens 1..L-1 of each row given the tokens before it: [B, L-1].

    `pysedd.ar.ar_token_nll` on rows that fit the model's context; longer rows are scored with a sliding window:
    each window scores only the tokens the previous windows did not, with at least `max_length - stride` tokens of
    context (stride defaults to half the context).
    """
    from ..ar import ar_token_nll as score

    if ids.dim() != 2 or ids.shape[1] < 2:
        raise UserError(f"need a [batch, length >= 2] tensor of token ids, got shape {tuple(ids.shape)}")
    max_length = max_length or int(getattr(model.config, "n_positions", None) or model.config.max_position_embeddings)
    stride = stride or max_length // 2
    L = ids.shape[1]
    out = torch.empty(ids.shape[0], L - 1, dtype=torch.float64)
    done = 1  # tokens [0, done) have been scored (token 0 never is)
    while done < L:
        end = min(L, done + (stride if done > 1 else max_length - 1))
        start = max(0, end - max_length)
        out[:, done - 1:end - 1] = score(model, ids[:, start:end])[:, done - start - 1:]
        done = end
    return out


# -- resumable shards ---------------------------------------------------------------------------------------------

class ShardCache:
    """Finished shards of a long evaluation, kept next to the output as `<out>.shards/<settings-hash>/<key>.json`.

    The folder name is a hash of every setting that changes a result, so a rerun with other settings never reuses
    stale shards. Each shard file is written atomically: a killed run loses at most the shard in progress, and a run
    that fails before finishing any shard (a full disk, a bad batch) removes the folders it made.
    """

    def __init__(self, out_path: str | os.PathLike, settings: dict, enabled: bool = True):
        self.root = Path(str(out_path) + ".shards")
        self.dir = self.root / settings_hash(settings)
        self.enabled = enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                atomic_write_text(self.dir / "settings.json",
                                  json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")
            except BaseException:
                self._remove_if_unfinished()
                raise

    def _remove_if_unfinished(self) -> None:
        """Drop this settings folder when it holds no finished shard, and the shards root when nothing else is in it."""
        if any(p.name != "settings.json" for p in self.dir.glob("*.json")):
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.root.rmdir()
        except OSError:
            pass  # other settings' shards, or already gone

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str):
        if not self.enabled or not self._path(key).is_file():
            return None
        try:
            return json.loads(self._path(key).read_text())
        except json.JSONDecodeError:
            return None

    def put(self, key: str, value) -> None:
        if self.enabled:
            atomic_write_text(self._path(key), json.dumps(value))

    def run(self, keys: Sequence[str], compute: Callable[[int], Any], desc: str, progress: bool = True) -> list:
        """compute(i) for every shard i not cached yet, with a progress bar; returns all shard results in order."""
        from tqdm.auto import tqdm

        results = [self.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        try:
            with tqdm(total=len(keys), initial=len(keys) - len(todo), desc=desc, unit="shard", disable=not progress) as bar:
                for i in todo:
                    results[i] = compute(i)
                    self.put(keys[i], results[i])
                    bar.update(1)
        except BaseException:
            if self.enabled:
                self._remove_if_unfinished()
            raise
        return results


# -- results ------------------------------------------------------------------------------------------------------

def write_result(result: dict, out: str | os.PathLike, table: str, table_path: str | os.PathLike | None = None) -> None:
    """The JSON result (with the markdown table inside it) and, when asked, the table as its own .md file."""
    result = {**result, "table_markdown": table, "environment": environment()}
    atomic_write_text(out, json.dumps(result, indent=2, default=_json_default) + "\n")
    if table_path:
        atomic_write_text(table_path, table + "\n")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "n": int(len(values))}


def fmt_pm(stat: dict, digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def setting_name(meta: dict, fallback: str) -> str:
    """A row label from the samples' metadata: model, sampler, steps, nucleus."""
    parts = [str(meta[k]) for k in ("model", "sampler") if meta.get(k)]
    if meta.get("steps"):
        parts.append(f"T={meta['steps']}")
    if meta.get("top_p") not in (None, 1.0):
        parts.append(f"p={meta['top_p']}")
    return " ".join(parts) or fallback


# -- token data -------------------------------------------------------------------------------------------------------

def load_samples(path: str | os.PathLike) -> tuple[np.ndarray, dict, dict]:
    """(samples [N, L] int64, meta dict, fingerprint) of a samples.npz written by `pysedd sample`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"samples file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "samples" not in f:
                raise UserError(f"{path} has no 'samples' array (has: {', '.join(f.files)})")
            samples = np.asarray(f["samples"], dtype=np.int64)
            meta = json.loads(str(f["meta"])) if "meta" in f else {}
    except (ValueError, OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read samples file {path}: {e}") from None
    if samples.ndim != 2 or samples.shape[0] == 0 or samples.shape[1] < 2:
        raise UserError(f"{path}: 'samples' must be [N >= 1, L >= 2] token ids, got shape {samples.shape}")
    return samples, meta, {"path": str(path.resolve()), "sha256": sha256_file(path)}


def check_token_ids(ids: np.ndarray, vocab_size: int, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise UserError(f"{what} holds token ids outside [0, {vocab_size}) (min {ids.min()}, max {ids.max()}); "
                        "were MASK tokens left in the samples?")


def load_token_blocks(source: str | os.PathLike, length: int | None, limit: int | None, tokenizer=None,
                      split: str = "train") -> tuple[np.ndarray, dict]:
    """Reference token blocks for the diversity of real data: the first `limit` blocks of split `split` of a
    `pysedd prepare`d directory (cut to `length`), or a text/jsonl file tokenised and packed into `length`-token blocks like SEDD's data."""
    path = Path(source)
    if path.is_dir():
        from ..data import PackedDataset

        ds = PackedDataset(path, split=split)
        length = length or ds.seq_len
        if ds.seq_len < length:
            raise UserError(f"{path} holds {ds.seq_len}-token blocks, shorter than the sample length {length}")
        n = len(ds) if limit is None else min(limit, len(ds))
        blocks = ds.batch(list(range(n))).numpy()[:, :length]
        return blocks, {"path": str(path.resolve()), "manifest_rows_sha256": ds.manifest.get("rows_sha256"),
                        "split": split, "n_blocks": int(n)}
    if not path.is_file():
        raise UserError(f"no such dataset directory or text file: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty")
    from ..data import open_corpus, pack_texts

    corpus = open_corpus(None, [path])
    length = length or 1024
    blocks = pack_texts(corpus.texts(), tokenizer, length)
    if len(blocks) == 0:
        raise UserError(f"{path} gives no complete {length}-token block")
    blocks = blocks[:limit] if limit is not None else blocks
    return blocks, {"path": str(path.resolve()), "sha256": sha256_file(path), "n_blocks": int(len(blocks))}
