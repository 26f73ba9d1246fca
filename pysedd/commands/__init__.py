"""The `pysedd` subcommands, and the one helper their parsers share."""
import argparse
import sys


class Renamed(argparse.Action):
    """A stored option whose first spelling is its name and whose others are deprecated aliases: they still work and
    print one `pysedd: warning: --old is deprecated; use --new` line. See docs/cli.md for the vocabulary."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string != self.option_strings[0]:
            print(f"pysedd: warning: {option_string} is deprecated; use {self.option_strings[0]}", file=sys.stderr)
        setattr(namespace, self.dest, values)
