"""Progress of a run as rank 0 sees it: a tqdm bar on a terminal, one plain line every `interval`
seconds in a batch log, nothing when quiet.

Why two forms: a batch job's log is read with `tail` or after the fact, where a bar's carriage
returns become one enormous line, while someone at a terminal wants a live bar with a rate and
an ETA. The master calls update() after every message, so update() costs one clock read and one
comparison until the next display is due (the bar is redrawn at most every BAR_INTERVAL seconds).

Only rank 0 creates a Progress: on the other ranks it would print the same line once per rank.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, TextIO

from .errors import say

BAR_INTERVAL = 0.15   # seconds between redraws of the terminal bar


class Progress:
    """Show `done` of `total` tasks (failed ones included), how many failed, how many are running.

    start() names the total when the engine knows it; update() takes absolute counts; close()
    shows the final state (a last plain line, or the bar's final draw). stream defaults to
    sys.stderr at the time of the call; clock (monotonic seconds) is replaceable for tests.
    """

    def __init__(self, quiet: bool = False, interval: float = 30.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet, self.interval, self.clock = quiet, interval, clock
        self.stream = sys.stderr if stream is None else stream
        self.total, self.label, self.counts = 0, "", (0, 0, 0)
        self.started = clock()
        self.closed = True   # until start()
        self.bar = None
        self.every = self.due = math.inf

    def start(self, total: int, label: str = "") -> "Progress":
        """Begin counting towards total; label prefixes the line, e.g. "rank 0's share: "."""
        self.total, self.label, self.started = total, label, self.clock()
        self.closed = self.quiet
        if self.quiet:
            return self
        if on_terminal(self.stream):
            from tqdm import tqdm   # imported only where a terminal will show it
            self.bar = tqdm(total=total, file=self.stream, desc=f"mtcmpi {label}".rstrip(": "),
                            unit="task", miniters=0, mininterval=0, dynamic_ncols=True)   # we throttle
            self.every, self.due = BAR_INTERVAL, self.started
        else:
            self.every, self.due = self.interval, self.started + self.interval
        return self

    def update(self, done: int, failed: int, running: int) -> None:
        """Record the counts; display them only if the next display is due. Cheap: call often."""
        self.counts = (done, failed, running)
        now = self.clock()
        if now < self.due:
            return
        self.due = now + self.every
        self.show(now)

    def close(self, done: int, failed: int) -> None:
        """Show the final counts once (nothing when quiet); later calls do nothing. They come
        from the ranks' logs: the master hears of a worker's last chunk only after its end."""
        if self.closed:
            return
        self.closed = True
        self.counts = (done, failed, 0)
        self.show(self.clock(), final=True)
        if self.bar is not None:
            self.bar.close()

    def show(self, now: float, final: bool = False) -> None:
        if self.bar is None:
            say(self.line(now, final), self.stream)
            return
        done, failed, running = self.counts
        self.bar.set_postfix(failed=failed, running=running, refresh=False)
        self.bar.update(done - self.bar.n)

    def line(self, now: float, final: bool = False) -> str:
        """e.g. `mtcmpi: 1234/10000 done (12.3%), 5 failed, 64 running, 410.2 tasks/s, ETA 0:00:21`."""
        done, failed, running = self.counts
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * done / self.total if self.total else 100.0
        if final:
            tail = f"took {duration(elapsed)}"
        else:
            tail = f"ETA {duration((self.total - done) / rate) if rate > 0 else '?'}"
        return (f"mtcmpi: {self.label}{done}/{self.total} done ({percent:.1f}%), {failed} failed, "
                f"{running} running, {rate:.1f} tasks/s, {tail}")


def on_terminal(stream: TextIO) -> bool:
    """Whether what is written to stream reaches a terminal. A launcher hands a rank's stderr to
    mpiexec through a pipe, and mpiexec forwards it to its own stderr, which then decides: Open
    MPI's mpiexec is the rank's parent, MPICH's its grandparent (the parent is hydra_pmi_proxy).
    Under srun or a batch job that is a file, and the answer is no."""
    if stream.isatty():
        return True
    if stream is not sys.stderr:
        return False
    try:
        launcher = os.getppid()
        if read(f"/proc/{launcher}/comm").strip() == "hydra_pmi_proxy":
            launcher = int(read(f"/proc/{launcher}/stat").rsplit(")", 1)[1].split()[1])
        return os.readlink(f"/proc/{launcher}/fd/2").startswith(("/dev/pts/", "/dev/tty"))
    except (OSError, ValueError, IndexError):
        return False


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def duration(seconds: float) -> str:
    """H:MM:SS, e.g. 0:00:21 (days as `1 day, 2:03:04`)."""
    from datetime import timedelta   # rank 0 only, when it shows progress

    return str(timedelta(seconds=round(seconds)))
