"""Subcommands of the `pysedd` CLI, one module each."""
