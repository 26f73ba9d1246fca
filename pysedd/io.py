"""Crash-safe file writing: a killed job never leaves a half-written file under the final name.

Also the guards every command that writes an output directory takes: a usable ``--out`` (one clear line when it is a
file or unwritable), an exclusive lock on it (a second writer is refused; the kernel drops the lock when its holder
dies, even by kill -9), and removal of the temporary files and directories a killed writer left behind.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pysedd.errors import UserError

LOCK_NAME = ".pysedd.lock"
# OSErrors that describe the user's storage (full, read-only, a file where a directory belongs, ...), not a bug:
# the command line prints them as one line
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR,
                  errno.ENOTDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG}


def storage_error_message(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def as_storage_error(exc: Exception, path: str | os.PathLike) -> Exception:
    """Writers that wrap the OS error in their own type (safetensors: "I/O error: ... (os error 28)") as the OSError
    it describes, so that a full disk reads the same whoever was writing."""
    found = re.search(r"\(os error (\d+)\)", str(exc)) if not isinstance(exc, OSError) else None
    return OSError(int(found[1]), os.strerror(int(found[1])), str(path)) if found else exc


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination directory; on success fsync it and rename it over `path`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success fsync its files and rename it onto `path`.

    `path` is at every moment absent, the old complete directory or the new complete one (a kill between the two
    renames leaves it absent, which reads as "not done"). Callers hold the directory's lock (`DirLock`).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            yield tmp
        except Exception as exc:
            error = as_storage_error(exc, path)
            if error is exc:
                raise
            raise error from exc
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_file(f)
        fsync_dir(tmp)
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(directory: str | os.PathLike) -> None:
    """Deletes the temporaries `atomic_path` and `atomic_dir` leave when their writer is killed (under the lock)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for pattern in (".*.tmp", ".*.tmp-*", ".*.old-*"):
        for stale in directory.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def require_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path when it is a readable regular file; otherwise one line that says what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file")
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file")
    return path


def require_output_files(args, *names: str) -> None:
    """Each named option that is set (`args.out`, `args.table`, ...) can become a file: not a directory, not below a
    file. Commands check this before any work, so a long job does not fail at its final write."""
    for name in names:
        value = getattr(args, name, None)
        if not value:
            continue
        flag, path = f"--{name.replace('_', '-')}", Path(value)
        if path.is_dir():
            raise UserError(f"{flag} {path} is a directory; give a file name")
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise UserError(f"{flag} {path}: {parent} is a file, not a directory")


def make_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Creates the output directory, or says in one line why it cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is an existing file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{flag} {path}: a parent of it is a file, not a directory") from None
    except OSError as exc:
        raise UserError(f"cannot create {flag} {path}: {exc.strerror}") from None
    return path


class DirLock:
    """An exclusive flock on ``<directory>/.pysedd.lock`` for as long as one command writes the directory."""

    def __init__(self, directory: str | os.PathLike, flag: str = "--out"):
        directory = make_out_dir(directory, flag)
        path = directory / LOCK_NAME
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot write to {flag} {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise UserError(f"{flag} {directory} is in use by another pysedd process (pid {holder}); wait for it to "
                            "finish or pick another directory") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (corpora and checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
