"""The `pysedd` command line. Each subcommand lives in its own module with an `add_parser(subparsers)` function."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from pathlib import Path

from . import __version__
from .config import ALLOW_HUGE_ENV
from .errors import UserError
from .io import STORAGE_ERRNOS, storage_error_message
from .signals import StopRequest

# commands that answer SIGTERM/SIGUSR1 with a checkpoint: their handlers go in before anything heavy is imported
CHECKPOINTING_COMMANDS = {"train", "distill"}
COMMAND_MODULES = (
    "pysedd.commands.demo",
    "pysedd.commands.prepare",
    "pysedd.commands.train",
    "pysedd.commands.distill",
    "pysedd.commands.sample",
    "pysedd.commands.bench",
    "pysedd.commands.eval",
    "pysedd.commands.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pysedd",
        description="Score Entropy Discrete Diffusion: train, sample and evaluate diffusion LMs against GPT-2.",
    )
    parser.add_argument("--version", action="version", version=f"pysedd {__version__}")
    parser.add_argument("--allow-huge", action="store_true",
                        help="load or build models beyond pysedd's size bounds (20 billion parameters, 1024 blocks, "
                        f"131072 positions), which otherwise read as a corrupt config; the same as {ALLOW_HUGE_ENV}=1")
    subparsers = parser.add_subparsers(title="commands", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


_PACKAGE = str(Path(__file__).resolve().parent)
_default_formatwarning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """pysedd's own warnings as one line, like its errors; other libraries' keep their usual form."""
    if str(Path(filename).resolve()).startswith(_PACKAGE):
        return f"pysedd: warning: {message}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    stop = StopRequest() if command in CHECKPOINTING_COMMANDS else None  # before torch and the command modules load
    try:
        return _run(argv, stop)
    finally:
        if stop is not None:
            stop.restore()


def _run(argv: list[str], stop: StopRequest | None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    args.stop_request = stop
    if args.allow_huge:
        os.environ[ALLOW_HUGE_ENV] = "1"  # children (torchrun workers, lm-eval) inherit it
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"pysedd: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the user's storage (disk full, read-only, ...), not a bug: one line too
        if e.errno not in STORAGE_ERRNOS:
            raise
        print(f"pysedd: error: {storage_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pysedd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
