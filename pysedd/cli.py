"""``pysedd`` command line: one subcommand per module in COMMAND_MODULES (each exposes ``add_parser(subparsers)``)."""
from __future__ import annotations

import argparse
import importlib
import sys

from pysedd.errors import UserError

COMMAND_MODULES = (
    "pysedd.commands.prepare",
    "pysedd.commands.train",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pysedd", description="Score Entropy Discrete Diffusion vs GPT-2")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"pysedd: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
