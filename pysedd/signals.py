"""Stop signals of the commands that checkpoint (`pysedd train`, `pysedd distill`).

SLURM sends SIGTERM (or SIGUSR1 with `--signal=USR1@...`) before a time limit or a preemption. A `StopRequest` only
records the signal; the trainer checks it after each step, writes a checkpoint and exits 75. `pysedd.cli` installs
one before it imports torch or any command module (this module and the CLI's own imports are standard library only),
so from the moment the interpreter runs pysedd a signal is answered, never fatal: during start-up (imports, data,
model build, resume) the trainer exits 75 before its first step with nothing to checkpoint.
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Remembers SIGTERM/SIGUSR1 (the last one received) until `restore()` puts the previous handlers back."""

    def __init__(self):
        self.signal = None
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def _handle(self, signum, frame):
        self.signal = signum

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
