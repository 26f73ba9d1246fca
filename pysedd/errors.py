"""Errors the CLI reports as one line (``pysedd: error: ...``, exit code 2) instead of a traceback."""


class UserError(ValueError):
    """Bad input from the user (a missing file, an unknown name, an unusable corpus)."""
