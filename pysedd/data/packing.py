"""Packing as SEDD does it, stored as memory-mappable token blocks.

Each row is GPT-2 tokenised (no special tokens), followed by one EOS (50256); the rows are concatenated and cut into
non-overlapping ``seq_len`` blocks; the remainder is dropped; no BOS. A prepared directory holds ``<split>.bin`` (raw
uint16, n_blocks × seq_len, C order) and ``manifest.json``. The manifest is written last, atomically, so a directory
without a valid manifest is an unfinished one and gets rebuilt.

Validation split: the last ⌈val_fraction · n_blocks⌉ blocks of the packed stream (the corpus's final documents, in its
own order). It is deterministic, streams (no second pass over the text), and at most one document straddles the cut.

Integrity: the manifest records each split file's size (blocks × seq_len), sha256, and the sha256 of every
``PAGE_BYTES`` page. Readers check by default (``verify='auto'``) the size and the whole-file sha256 of files up to
``FULL_VERIFY_BYTES`` (about a second), and for larger files the last page plus ``SAMPLED_PAGES`` pages drawn at random
on each open (a persistent flip is caught with growing probability over a run's restarts); ``'full'`` hashes everything,
``'size'`` only checks sizes. ``prepare`` applies the same check to an existing build and rebuilds it on a mismatch.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from pysedd.io import DirLock, atomic_path, atomic_write_text, remove_stale_temps
from pysedd.data.corpora import Corpus
from pysedd.errors import UserError

FORMAT = "pysedd-packed-v1"
MANIFEST = "manifest.json"
TOKEN_DTYPE = np.uint16
PAGE_BYTES = 1 << 24
FULL_VERIFY_BYTES = 1 << 30
SAMPLED_PAGES = 8
VERIFY_MODES = ("auto", "full", "size")


def pack_token_rows(token_rows: Iterable[Sequence[int]], seq_len: int, eos_id: int) -> tuple[np.ndarray, int]:
    """In-memory packing: (blocks [n, seq_len] int64, number of dropped remainder tokens)."""
    stream = [t for row in token_rows for t in (*row, eos_id)]
    n_blocks = len(stream) // seq_len
    blocks = np.asarray(stream[: n_blocks * seq_len], dtype=np.int64).reshape(n_blocks, seq_len)
    return blocks, len(stream) - n_blocks * seq_len


def pack_token_rows_sedd(token_rows: Iterable[Sequence[int]], seq_len: int, eos_id: int, num_proc: int = 8,
                         map_batch: int = 1000) -> np.ndarray:
    """Blocks exactly as SEDD's data.py cuts them: its group_texts runs through datasets' map(batched=True,
    num_proc=8), i.e. on 8 contiguous shards of the rows, 1000 rows at a time, dropping the remainder of every batch
    (a few blocks fewer than one concatenation, and shifted boundaries)."""
    rows = list(token_rows)
    num_proc = max(1, min(num_proc, len(rows)))  # datasets lowers num_proc to the number of rows
    div, mod = divmod(len(rows), num_proc)
    parts, start = [np.zeros((0, seq_len), dtype=np.int64)], 0
    for shard in range(num_proc):
        end = start + div + (shard < mod)
        for lo in range(start, end, map_batch):
            parts.append(pack_token_rows(rows[lo:min(lo + map_batch, end)], seq_len, eos_id)[0])
        start = end
    return np.concatenate(parts)


CHUNKINGS = ("concat", "sedd")


def pack_texts(texts: Iterable[str], tokenizer, seq_len: int = 1024, chunking: str = "concat") -> np.ndarray:
    """Tokenises and packs texts in memory (for evaluation sets); returns [n_blocks, seq_len] int64.
    chunking: 'concat' (all rows concatenated, one remainder dropped) or 'sedd' (`pack_token_rows_sedd`)."""
    if chunking not in CHUNKINGS:
        raise UserError(f"chunking must be one of {', '.join(CHUNKINGS)}, got {chunking!r}")
    token_rows = tokenizer.encode_batch(list(texts))
    if chunking == "sedd":
        return pack_token_rows_sedd(token_rows, seq_len, tokenizer.eos_id)
    blocks, _ = pack_token_rows(token_rows, seq_len, tokenizer.eos_id)
    return blocks


class _BlockWriter:
    """Appends token rows (+EOS) to a raw uint16 file, writing whole blocks only; hashes the rows it sees."""

    def __init__(self, path: Path, seq_len: int, eos_id: int):
        self.file = open(path, "wb")
        self.seq_len, self.eos_id = seq_len, eos_id
        self.pending: list[int] = []
        self.blocks = 0
        self.content_tokens = 0

    def add(self, token_rows: Iterable[Sequence[int]]) -> None:
        for row in token_rows:
            self.pending.extend(row)
            self.pending.append(self.eos_id)
            self.content_tokens += len(row)
        n = len(self.pending) // self.seq_len
        if n:
            # file.write, not ndarray.tofile: a full disk then raises OSError(ENOSPC) rather than an errno-less one
            self.file.write(np.asarray(self.pending[: n * self.seq_len], dtype=TOKEN_DTYPE).tobytes())
            del self.pending[: n * self.seq_len]
            self.blocks += n


def _manifest_problem(manifest) -> str | None:
    """What makes a parsed manifest unusable, or None."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"its format is not {FORMAT}"
    seq_len, splits = manifest.get("seq_len"), manifest.get("splits")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        return f"seq_len must be a positive integer, got {seq_len!r}"
    if not isinstance(splits, dict) or not splits:
        return "it has no 'splits' mapping"
    for split, info in splits.items():
        if not isinstance(info, dict):
            return f"split {split!r} is not a mapping"
        name, blocks, pages = info.get("file"), info.get("blocks"), info.get("pages_sha256", [])
        if pages and not (isinstance(info.get("page_bytes"), int) and info["page_bytes"] > 0):
            return f"split {split!r} has page checksums without a page size"
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            return f"split {split!r} names no plain file in the directory ({name!r})"
        if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 0:
            return f"split {split!r} has blocks {blocks!r}, not a count"
        if not isinstance(info.get("sha256"), str) or not (isinstance(pages, list)
                                                           and all(isinstance(p, str) for p in pages)):
            return f"split {split!r} has no valid sha256 checksums"
    return None


def load_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a complete prepared directory; one clear error when it is missing or malformed."""
    directory = Path(directory)
    if not directory.exists():
        raise UserError(f"{directory} is not a prepared dataset (it does not exist); run pysedd prepare")
    if not directory.is_dir():
        raise UserError(f"{directory} is a file, not a prepared dataset (a directory made by pysedd prepare)")
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{directory} is not a prepared dataset (no valid {MANIFEST}); run pysedd prepare") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); re-run pysedd prepare") from None
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise UserError(f"{path} is malformed: {problem}; re-run pysedd prepare")
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict | None:
    """The manifest of a complete prepared directory, or None when missing/malformed (an unfinished directory)."""
    try:
        return load_manifest(directory)
    except UserError:
        return None


def hash_pages(path: Path) -> tuple[str, list[str]]:
    """(sha256 of the file, sha256 of each PAGE_BYTES page) in one read."""
    whole, pages = hashlib.sha256(), []
    with open(path, "rb") as f:
        while page := f.read(PAGE_BYTES):
            whole.update(page)
            pages.append(hashlib.sha256(page).hexdigest())
    return whole.hexdigest(), pages


def _check_split_file(directory: Path, manifest: dict, split: str, verify: str) -> Path:
    info = manifest["splits"].get(split)
    if info is None:
        raise UserError(f"{directory} has no split {split!r}; it has {', '.join(manifest['splits'])}")
    path = directory / info["file"]
    expected = info["blocks"] * manifest["seq_len"] * np.dtype(TOKEN_DTYPE).itemsize
    if not path.is_file() or path.stat().st_size != expected:
        raise UserError(f"{path} is missing or has the wrong size (expected {expected} bytes): re-run pysedd prepare")
    pages = info.get("pages_sha256", [])
    if verify == "full" or (verify == "auto" and (expected <= FULL_VERIFY_BYTES or not pages)):
        ok = hash_pages(path)[0] == info["sha256"]
    elif verify == "auto":
        chosen = {len(pages) - 1, *random.SystemRandom().sample(range(len(pages)), min(SAMPLED_PAGES, len(pages)))}
        size = info["page_bytes"]
        with open(path, "rb") as f:
            ok = all(hashlib.sha256(os.pread(f.fileno(), size, i * size)).hexdigest() == pages[i]
                     for i in sorted(chosen))
    else:
        ok = True
    if not ok:
        raise UserError(f"{path} does not match the sha256 in its manifest (corrupted since it was written): re-run "
                        "pysedd prepare to rebuild it")
    return path


def prepare_corpus(
    corpus: Corpus,
    out_dir: str | os.PathLike,
    tokenizer,
    seq_len: int = 1024,
    val_fraction: float = 0.0,
    split_name: str = "train",
    batch_rows: int = 1024,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Tokenises, packs and stores ``corpus`` in ``out_dir``; returns the manifest.

    With ``val_fraction`` > 0 the output has splits ``split_name`` and 'validation'; otherwise only ``split_name``.
    An existing complete directory built from the same request (and whose files still match their checksums) is
    reused unless ``force``. The directory is locked while it is written.
    """
    if not split_name or Path(split_name).name != split_name or split_name.startswith("."):
        raise UserError(f"split name must be a plain file name, got {split_name!r}")
    if batch_rows < 1:
        raise UserError(f"batch_rows must be positive, got {batch_rows}")
    if seq_len < 1:
        raise UserError(f"seq_len must be positive, got {seq_len}")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if tokenizer.vocab_size > np.iinfo(TOKEN_DTYPE).max + 1:
        raise UserError(f"vocabulary of {tokenizer.vocab_size} ids does not fit uint16 storage")
    out = Path(out_dir)
    request = {
        "tokenizer": tokenizer.fingerprint,
        "seq_len": seq_len,
        "val_fraction": val_fraction,
        "split_name": split_name,
        "source": corpus.source,
    }
    lock = DirLock(out)  # one writer; a second prepare on the same --out is refused
    try:
        return _build(corpus, out, tokenizer, request, seq_len, val_fraction, split_name, batch_rows, force, progress)
    finally:
        lock.release()


def _build(corpus, out: Path, tokenizer, request: dict, seq_len: int, val_fraction: float, split_name: str,
           batch_rows: int, force: bool, progress: bool) -> dict:
    from tqdm.auto import tqdm

    from pysedd import __version__

    existing = read_manifest(out)
    if existing is not None and not force and existing.get("request") == request:
        try:
            for split in existing["splits"]:
                _check_split_file(out, existing, split, verify="auto")
            return existing
        except UserError:  # a .bin file was truncated, corrupted or removed since: rebuild
            pass

    (out / MANIFEST).unlink(missing_ok=True)  # from here on the directory is "unfinished"
    remove_stale_temps(out)  # temp files of a killed earlier run
    with ExitStack() as files:  # every output is a temp file until the block ends without an exception
        stream_tmp = files.enter_context(atomic_path(out / f"{split_name}.bin"))
        writer = _BlockWriter(stream_tmp, seq_len, tokenizer.eos_id)
        rows_digest = hashlib.sha256()
        n_rows = 0
        with writer.file, tqdm(total=corpus.total, unit="rows", desc=f"tokenising {corpus.name}",
                               disable=not progress) as bar:
            batch: list[str] = []
            for text in corpus.texts():
                batch.append(text)
                if len(batch) == batch_rows:
                    _flush(batch, tokenizer, writer, rows_digest, bar)
                    n_rows += len(batch)
                    batch = []
            _flush(batch, tokenizer, writer, rows_digest, bar)
            n_rows += len(batch)
        dropped = len(writer.pending)

        total_tokens = writer.blocks * seq_len + dropped
        if writer.content_tokens == 0:
            raise UserError(f"corpus {corpus.name!r} is empty: {n_rows} rows and no text")
        n_val = math.ceil(val_fraction * writer.blocks) if val_fraction > 0 else 0
        if writer.blocks - n_val < 1 or (val_fraction > 0 and writer.blocks < 2):
            raise UserError(
                f"corpus {corpus.name!r} is too short: {total_tokens} tokens (with EOS) give {writer.blocks} block(s) "
                f"of {seq_len}, need at least {2 if val_fraction > 0 else 1}; use a smaller --seq-len or more text"
            )
        split_files = {split_name: (stream_tmp, writer.blocks - n_val)}
        if n_val:  # move the tail of the stream into validation.bin
            val_tmp = files.enter_context(atomic_path(out / "validation.bin"))
            cut = (writer.blocks - n_val) * seq_len * np.dtype(TOKEN_DTYPE).itemsize
            with open(stream_tmp, "rb") as src, open(val_tmp, "wb") as dst:
                src.seek(cut)
                shutil.copyfileobj(src, dst)
            os.truncate(stream_tmp, cut)
            split_files["validation"] = (val_tmp, n_val)
        splits = {}
        for split, (tmp, blocks) in split_files.items():
            digest, pages = hash_pages(tmp)
            splits[split] = {"file": f"{split}.bin", "blocks": blocks, "tokens": blocks * seq_len, "sha256": digest,
                             "page_bytes": PAGE_BYTES, "pages_sha256": pages}
    manifest = {
        "format": FORMAT,
        "pysedd_version": __version__,
        "request": request,
        "seq_len": seq_len,
        "dtype": "uint16",
        "eos_id": tokenizer.eos_id,
        "rows": n_rows,
        "rows_sha256": rows_digest.hexdigest(),
        "tokens_total": total_tokens,
        "tokens_dropped": dropped,
        "splits": splits,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _flush(batch, tokenizer, writer, rows_digest, bar) -> None:
    if not batch:
        return
    for text in batch:
        rows_digest.update(text.encode("utf-8"))
        rows_digest.update(b"\x00")  # row separator so that ["ab"] and ["a", "b"] differ
    writer.add(tokenizer.encode_batch(batch))
    bar.update(len(batch))


class PackedDataset(torch.utils.data.Dataset):
    """Blocks of a prepared directory, memory-mapped; item i is an int64 tensor of shape [seq_len].

    ``verify``: 'auto' (size + sha256 of the whole file or of sampled pages, see the module docstring), 'full' or
    'size'.
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train", verify: str = "auto"):
        self.directory = Path(directory)
        if verify not in VERIFY_MODES:
            raise UserError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {verify!r}")
        manifest = load_manifest(self.directory)
        path = _check_split_file(self.directory, manifest, split, verify)
        self.manifest, self.split = manifest, split
        self.seq_len = manifest["seq_len"]
        self.tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r").reshape(-1, self.seq_len)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.tokens[index].astype(np.int64))

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Blocks ``indices`` as one [len(indices), seq_len] int64 tensor."""
        return torch.from_numpy(self.tokens[np.asarray(indices)].astype(np.int64))
