"""The batch system's warning to a pool: SIGUSR1, SIGUSR2 or SIGTERM, which mpirun passes on
to every rank. Caught on every rank from before MPI starts, so none dies of it: rank 0 drains
the pool (serve.py), the workers go on with the task they run."""
from __future__ import annotations

import signal
import time

from ..faults import SIGNALS

STOP_SIGNALS = tuple(sig for sig in SIGNALS if sig != signal.SIGINT)
_received: list[tuple[float, str]] = []   # (time.monotonic(), signal name), in order


def catch() -> None:
    """From now on, remember the stop signals instead of ending the process."""
    def remember(signum: int, frame) -> None:
        _received.append((time.monotonic(), signal.Signals(signum).name))
    for sig in STOP_SIGNALS:
        signal.signal(sig, remember)


def first() -> tuple[float, str] | None:
    """(when, name) of the first stop signal, or None."""
    return _received[0] if _received else None
