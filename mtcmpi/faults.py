"""Stopping a run early without losing anything: signals, walltime, failure limits.

Batch systems send SIGTERM, SIGUSR1 or SIGUSR2 (Grid Engine's -notify) before they kill a job;
Ctrl-C sends SIGINT. Any
of them, the walltime drawing near, or too many failures trips this rank's Stop: the master
hands out no more work, every rank finishes the task it is running and starts no other, and the
run ends as usual — results stored, journal flushed — with exit status EXIT_STOPPED so a job
script knows to resubmit the same command, which resumes. A task still running --grace seconds
after a signal ends the job at once (its rank's journal is flushed first); so does a second
Ctrl-C. Repeats of a signal within a second are ignored: a batch system signals every process
and mpiexec forwards the same signal to the ranks, so each rank often gets it twice. A signal
that comes before the run has begun (from the moment `run` has parsed its arguments, through
MPI start-up and the task module's import) is remembered by catch_early() and stops the run
before its first task; one that comes after the last task changes nothing (the results are
being stored). Only while Python itself starts does a stop signal still kill a rank.
"""
from __future__ import annotations

from collections import deque
import os
import signal
import time
TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing on every rank

from .errors import UsageError

if TYPE_CHECKING:
    from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
REPEAT = 1.0   # seconds within which the same signal arriving again is one signal
_early: list[int] = []   # stop signals that came before any Stop was installed


def catch_early() -> None:
    """From now until a run installs its Stop, remember the batch system's stop signals instead
    of dying of them (Ctrl-C keeps its usual meaning)."""
    for sig in SIGNALS:
        if sig != signal.SIGINT:
            signal.signal(sig, lambda signum, frame: _early.append(signum))


def ignore_late() -> None:
    """After the run, until the process exits: stop signals change nothing (everything is stored)."""
    for sig in SIGNALS:
        if sig != signal.SIGINT:
            signal.signal(sig, signal.SIG_IGN)


class GraceExpired(BaseException):
    """Raised in the main thread when running tasks outlast --grace (not an Exception, so no
    task's own `except Exception` swallows it)."""


class Stop:
    """Why this rank should start no more tasks, if it should: checked before every task."""

    def __init__(self, deadline: float | None = None, max_failures: int | None = None,
                 grace: float = 20.0):
        self.reason: str | None = None
        self.deadline, self.max_failures, self.grace = deadline, max_failures, grace
        self.done, self.failed, self.busy = 0, 0, 0.0   # tasks seen so far, by observe()
        self.saved: dict[int, Callable] = {}
        self.signalled = 0.0   # when the first signal came
        self.running = False   # tasks may be running: a signal arms the --grace timer
        self.over = False      # the engine has finished: signals change nothing now

    def observe(self, done: float, failed: float, busy: float) -> None:
        """Tasks finished since the last call: they feed the estimate and --max-failures."""
        self.done += int(done)
        self.failed += int(failed)
        self.busy += busy

    def before_task(self, now: float, done: int = 0, failed: int = 0, busy: float = 0.0) -> bool:
        """True if no task should start now. The hot loop's one check, so it is cheap when no
        limit is set; done/failed/busy are what the caller ran since its last observe()."""
        if self.reason is None:
            if self.max_failures is not None and self.failed + failed >= self.max_failures:
                self.reason = f"{self.failed + failed} failed tasks (--max-failures {self.max_failures})"
            elif self.deadline is not None:
                n = self.done + done
                if now + ((self.busy + busy) / n if n else 0.0) > self.deadline:
                    self.reason = "walltime: the next task would not finish in time"
        return self.reason is not None

    @property
    def resumable(self) -> bool:
        """Stopped by a signal or the walltime (not by failures): the job should be resubmitted."""
        return self.reason is not None and not self.reason.endswith(f"--max-failures {self.max_failures})")

    def install(self) -> None:
        """Catch the batch system's and the user's signals for the length of the run (one that
        came earlier, see catch_early, counts as if it came now)."""
        for sig in SIGNALS:
            self.saved[sig] = signal.signal(sig, self.on_signal)
        self.saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, self.on_alarm)
        if _early:
            self.on_signal(_early.pop(0), None)
            _early.clear()

    def begin(self) -> None:
        """The engine starts: from now on a signal gives running tasks --grace to finish."""
        self.running = True

    def quiet(self) -> None:
        """The engine is done: no grace timer any more, and later signals change nothing."""
        self.over = True
        signal.setitimer(signal.ITIMER_REAL, 0)

    def uninstall(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        self.saved.clear()

    def on_signal(self, signum: int, frame) -> None:
        if self.over:
            return
        if self.signalled:
            if signum == signal.SIGINT and time.time() - self.signalled > REPEAT:
                raise GraceExpired("a second Ctrl-C")
            return
        self.signalled = time.time()
        self.reason = f"signal {signal.Signals(signum).name}"
        if self.running:
            signal.setitimer(signal.ITIMER_REAL, self.grace)

    def on_alarm(self, signum: int, frame) -> None:
        raise GraceExpired(f"tasks still running {self.grace:g} s after {self.reason} (--grace)")


def parse_walltime(text: str) -> float:
    """'HH:MM:SS', 'MM:SS', 'D-HH:MM:SS' or seconds, as seconds."""
    days, _, clock = text.rpartition("-")
    try:
        parts = [float(p) for p in clock.split(":")]
        if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
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
