"""The `pysedd` command line. Each subcommand lives in its own module with an `add_parser(subparsers)` function."""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

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
    subparsers = parser.add_subparsers(title="commands", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"pysedd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pysedd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
