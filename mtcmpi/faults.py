"""Stopping a run early without losing anything: signals, walltime, failure limits.

Batch systems send SIGTERM, SIGUSR1 or SIGUSR2 (Grid Engine's -notify) before they kill a job;
Ctrl-C sends SIGINT. Any of them, the walltime drawing near, or too many failures trips this
rank's Stop: the master hands out no more work, every rank finishes the task it is running and
starts no other, and the run ends as usual — results stored, journal flushed — with exit status
EXIT_STOPPED so a job script knows to resubmit the same command, which resumes.

The first signal also calls the Stop's listeners at once (the journal writes what finished: a
launcher may SIGKILL the rank a second later) and starts a --grace watchdog thread: a run still
going --grace seconds later (a long task, a task stuck in C code, a rank frozen in start-up
while the others wait in a collective) is ended by Stop.expired — the job's, which flushes the
journal and aborts with EXIT_STOPPED. --grace 0 ends it at once, once every rank had
JOURNAL_TIME to journal what finished (MPICH's launcher SIGKILLs every rank the moment one
aborts; Open MPI SIGTERMs them first). A second Ctrl-C ends it too.
Repeats of a signal within a second are ignored: a batch system signals every process and
mpiexec forwards the same signal to the ranks, so each rank often gets it twice. A signal that
comes before the run has begun (from the moment `run` has parsed its arguments, through MPI
start-up and the task module's import) is caught by catch_early()'s Stop, which the run's takes
over, and stops the run before its first task; one that comes after the last task changes
nothing (the results are being stored). Only while Python itself starts does a stop signal
still kill a rank. A task that replaces a stop signal's handler (SIG_IGN, its own) gets
mtcmpi's put back within CHECK_EVERY seconds.
"""
from __future__ import annotations

import enum
import math
import os
import signal
import sys
import threading
import time
from collections import deque
TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing on every rank

from .errors import EXIT_STOPPED, UsageError, say

if TYPE_CHECKING:
    from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
REPEAT = 1.0   # seconds within which the same signal arriving again is one signal
JOURNAL_TIME = 0.5   # seconds every rank has after a stop signal to journal before one ends the job
_early: Stop | None = None   # the Stop of start-up, until a run installs its own


def catch_early(grace: float = 20.0) -> None:
    """From now until a run installs its Stop, a stop signal is remembered instead of killing
    the rank (the run then stops before its first task), and --grace after it, or at a second
    Ctrl-C, the job ends if the run has not taken over (a rank may be frozen while the others
    wait for it in a collective)."""
    global _early
    early = Stop(grace=grace if math.isfinite(grace) and grace >= 0 else 20.0)
    early.install()   # (takes over from an earlier call's)
    _early = early


def end_process(why: str) -> None:
    """A Stop's end when no run is there to end (start-up): end the job, or this process."""
    message = f"mtcmpi: {why}; nothing ran yet: run the same command again"
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        from .world import World
        World.of().abort(message, EXIT_STOPPED)
    say(message)
    os._exit(EXIT_STOPPED)


def ignore_late() -> None:
    """After the run, until the process exits: stop signals change nothing (everything is stored)."""
    for sig in SIGNALS:
        if sig != signal.SIGINT:
            signal.signal(sig, signal.SIG_IGN)


class StopKind(enum.Enum):
    """What stopped a run early: a signal and the walltime leave work to resume, failures do not."""

    SIGNAL = "signal"
    WALLTIME = "walltime"
    MAX_FAILURES = "max-failures"

    @property
    def resumable(self) -> bool:
        """The job should be resubmitted to run the rest (exit status EXIT_STOPPED)."""
        return self is not StopKind.MAX_FAILURES


CHECK_EVERY = 1.0   # seconds between the hot loop's looks at the signal handlers, without limits


class Stop:
    """Why this rank should start no more tasks, if it should: checked before every task."""

    def __init__(self, deadline: float | None = None, max_failures: int | None = None,
                 grace: float = 20.0):
        """grace and deadline come checked (RunOptions: finite, in range)."""
        self.reason: str | None = None     # why, in words (for the summary)
        self.kind: StopKind | None = None  # why, for the code
        self.deadline, self.max_failures, self.grace = deadline, max_failures, grace
        self.done, self.failed, self.busy = 0, 0, 0.0   # tasks seen so far, by observe()
        self.saved: dict[int, Callable] = {}
        self.listeners: list[Callable[[], None]] = []   # called at the first stop signal
        self.expired: Callable[[str], None] = end_process   # the job's end at --grace
        self.watchdog: threading.Timer | None = None
        self.signalled = 0.0   # when the first signal came
        self.over = False      # the engine has finished: signals change nothing now
        self.changed: set[int] = set()   # signals whose handler a task replaced (told once)
        self.look_at = 0.0   # when before_task next looks at the signal handlers
        self.halted = False    # stopped for an internal reason (halt): the master must stop all

    def observe(self, done: float, failed: float, busy: float) -> None:
        """Tasks finished since the last call: they feed the estimate and --max-failures."""
        self.done += int(done)
        self.failed += int(failed)
        self.busy += busy

    def before_task(self, now: float, done: int = 0, failed: int = 0, busy: float = 0.0) -> bool:
        """True if no task should start now; also puts back signal handlers a task replaced.
        done/failed/busy are what the caller ran since its last observe()."""
        if self.saved and now >= self.look_at:
            self.look_at = now + CHECK_EVERY
            self.keep_handlers()
        if self.reason is None:
            if self.max_failures is not None and self.failed + failed >= self.max_failures:
                self.kind = StopKind.MAX_FAILURES
                self.reason = f"{self.failed + failed} failed tasks (--max-failures {self.max_failures})"
            elif self.deadline is not None:
                n = self.done + done
                if now + ((self.busy + busy) / n if n else 0.0) > self.deadline:
                    self.kind = StopKind.WALLTIME
                    self.reason = "walltime: the next task would not finish in time"
        return self.reason is not None

    @property
    def resumable(self) -> bool:
        """Stopped by a signal or the walltime (not by failures): the job should be resubmitted."""
        return self.kind is not None and self.kind.resumable

    def install(self) -> None:
        """Catch the batch system's and the user's signals for the length of the run; take over
        from catch_early's Stop (a signal that came then counts from when it came)."""
        global _early
        early, _early = _early, None
        if early is not None:
            early.quiet()
            self.saved = early.saved
        for sig in SIGNALS:
            handler = signal.signal(sig, self.on_signal)
            self.saved.setdefault(sig, handler)
        if early is not None and early.signalled:
            self.reason, self.kind, self.signalled = early.reason, early.kind, early.signalled
            self.arm()

    def keep_handlers(self) -> None:
        """Put back mtcmpi's handler of any stop signal a task replaced (SIG_IGN, its own),
        saying so once per signal: without it a stop signal would go unnoticed."""
        for sig in SIGNALS:
            if signal.getsignal(sig) != self.on_signal:
                signal.signal(sig, self.on_signal)
                if sig not in self.changed:
                    self.changed.add(sig)
                    say(f"mtcmpi: a task replaced the handler of {signal.Signals(sig).name}; "
                        "mtcmpi put its own back (it stops the run cleanly)")

    def quiet(self) -> None:
        """The engine is done: no grace any more, and later signals change nothing."""
        self.over = True
        if self.watchdog:
            self.watchdog.cancel()

    def uninstall(self) -> None:
        self.quiet()
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        self.saved.clear()

    def halt(self, reason: str) -> None:
        """Stop this rank now for an internal reason (the journal cannot be written)."""
        self.halted = True
        if self.reason is None:
            self.reason = reason

    def on_signal(self, signum: int, frame) -> None:
        if self.over:
            return
        if self.signalled:
            if signum == signal.SIGINT and time.time() - self.signalled > REPEAT:
                self.expired("a second Ctrl-C")
            return
        self.signalled = time.time()
        self.kind = StopKind.SIGNAL
        self.reason = f"signal {signal.Signals(signum).name}"
        for listener in self.listeners:   # the launcher may SIGKILL this rank a second later
            listener()
        self.arm()

    def arm(self) -> None:
        """End the run --grace after the first signal (JOURNAL_TIME at the least) unless it is
        over by then. A thread, not SIGALRM: it also ends a rank stuck in C code or in an MPI
        call, where no Python signal handler runs."""
        seconds = max(self.grace, JOURNAL_TIME) - (time.time() - self.signalled)
        self.watchdog = threading.Timer(max(0.0, seconds), self.on_grace)
        self.watchdog.daemon = True
        self.watchdog.start()

    def on_grace(self) -> None:
        """--grace after the first signal, the run is not over: end the job now."""
        if not self.over:
            self.expired(f"still running {self.grace:g} s after {self.reason} (--grace)")


def parse_walltime(text: str) -> float:
    """'HH:MM:SS', 'MM:SS', 'D-HH:MM:SS' or seconds, as seconds."""
    days, _, clock = text.rpartition("-")
    try:
        parts = [float(p) for p in clock.split(":")]
        if not 1 <= len(parts) <= 3 or not all(math.isfinite(p) and p >= 0 for p in parts):
            raise ValueError
        seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
        return seconds + 86400 * (int(days) if days else 0)
    except ValueError:
        raise UsageError(f"--walltime {text!r} is not HH:MM:SS") from None


def batch_deadline() -> float | None:
    """The job's end time (epoch seconds) when the batch system tells it: Slurm does."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    import datetime as dt   # here: only rank 0 of a Slurm job asks, every rank imports this module
    import shutil
    import subprocess

    if not shutil.which("squeue"):
        return None
    try:
        end = subprocess.run(["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        return dt.datetime.fromisoformat(end).timestamp()
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def deadline(walltime: str | None, margin: float) -> float | None:
    """When to start no more tasks: --walltime from now (else the batch system's end), less margin."""
    end = time.time() + parse_walltime(walltime) if walltime else batch_deadline()
    return None if end is None else end - margin


class Retries:
    """--retries K on the master: failed tasks come back from the workers and go out again, up
    to K more times each, never to a rank they failed on unless every other worker is idle.
    It remembers who ran each retried task last and how often it was tried, so that exactly
    one rank writes its row."""

    def __init__(self, limit: int):
        self.limit = limit
        self.queue: deque[tuple[int, object]] = deque()   # (task id, payload) to try again
        self.failed_on: dict[int, set[int]] = {}   # task id -> ranks it failed on
        self.tries: dict[int, int] = {}            # task id -> times handed out
        self.last: dict[int, int] = {}             # task id -> rank of the last try

    def failed(self, tasks: list[tuple[int, object]], rank: int) -> None:
        for tid, payload in tasks:
            self.failed_on.setdefault(tid, set()).add(rank)
            self.last.setdefault(tid, rank)
            if self.tries.setdefault(tid, 1) <= self.limit:
                self.queue.append((tid, payload))

    def take(self, rank: int, k: int, alone: bool) -> list[tuple[int, object]]:
        """Up to k queued tasks for `rank`: none that failed on it, unless it is alone (no
        other worker still asks for work)."""
        out, kept = [], []
        while self.queue and len(out) < k:
            tid, payload = self.queue.popleft()
            if rank in self.failed_on[tid] and not alone:
                kept.append((tid, payload))
                continue
            out.append((tid, payload))
            self.tries[tid] += 1
            self.last[tid] = rank
        self.queue.extendleft(reversed(kept))
        return out

    def outcome(self) -> dict[int, tuple[int, int]]:
        """task id -> (rank of its last try, tries) for every task that failed at least once."""
        return {tid: (self.last[tid], self.tries[tid]) for tid in self.tries}
