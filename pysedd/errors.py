"""The one exception type the command line turns into a plain error message."""


class UserError(ValueError):
    """Bad input from the user: a wrong shape, a missing file, an unknown config key.

    The CLI prints these as one line (`pysedd: error: ...`) instead of a traceback.
    """
