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
import sys
import time
from datetime import timedelta
from typing import Callable, TextIO

BAR_INTERVAL = 0.15   # seconds between redraws of the terminal bar


class Progress:
    """Show `done` of `total` tasks (failed ones included), how many failed, how many are running.

    update() takes absolute counts; close() shows the final state (a last plain line, or the
    bar's final draw). stream defaults to sys.stderr at the time of the call; clock (monotonic
    seconds) is replaceable for tests.
    """

    def __init__(self, total: int, quiet: bool = False, interval: float = 30.0,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.clock = total, clock
        self.stream = sys.stderr if stream is None else stream
        self.started = clock()
        self.counts = (0, 0, 0)
        self.closed = quiet
        self.bar = None
        if quiet:
            self.every = self.due = math.inf
        elif self.stream.isatty():
            from tqdm import tqdm   # imported only where a terminal will show it
            self.bar = tqdm(total=total, file=self.stream, desc="mtcmpi", unit="task",
                            miniters=0, mininterval=0, dynamic_ncols=True)   # we throttle
            self.every, self.due = BAR_INTERVAL, self.started
        else:
            self.every, self.due = interval, self.started + interval

    def update(self, done: int, failed: int, running: int) -> None:
        """Record the counts; display them only if the next display is due. Cheap: call often."""
        self.counts = (done, failed, running)
        now = self.clock()
        if now < self.due:
            return
        self.due = now + self.every
        self.show(now)

    def close(self) -> None:
        """Show the final counts once (nothing when quiet); later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        self.show(self.clock(), final=True)
        if self.bar is not None:
            self.bar.close()

    def show(self, now: float, final: bool = False) -> None:
        if self.bar is None:
            print(self.line(now, final), file=self.stream, flush=True)
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
        return (f"mtcmpi: {done}/{self.total} done ({percent:.1f}%), {failed} failed, "
                f"{running} running, {rate:.1f} tasks/s, {tail}")


def duration(seconds: float) -> str:
    """H:MM:SS, e.g. 0:00:21 (days as `1 day, 2:03:04`)."""
    return str(timedelta(seconds=round(seconds)))
