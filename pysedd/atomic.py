"""Crash-safe file writes: a killed process leaves either the old file or the new one, never a half-written one.

Pattern: write ``.<name>.tmp-<pid>`` in the same directory, flush + fsync it, ``os.replace`` it onto the final name,
fsync the directory so the rename itself survives a power cut.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def fsync_dir(directory: str | os.PathLike) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """fsyncs ``tmp`` and renames it onto ``path`` atomically."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears only if the block finishes without an exception."""
    tmp = temp_path_for(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(Path(path).parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def remove_stale_temps(directory: str | os.PathLike) -> None:
    """Deletes temp files left by killed writers in ``directory``."""
    for p in Path(directory).glob(".*.tmp-*"):
        p.unlink(missing_ok=True)
