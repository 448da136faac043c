"""What one rank ran: per-task id, times, status, result and failure, kept compactly.

Columns are array.array so a rank that runs millions of tasks holds 25 bytes per task,
and the per-task bookkeeping costs well under a microsecond.
"""
from __future__ import annotations

import enum
import math
from array import array
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .errors import describe
from .faults import CHECK_EVERY

if TYPE_CHECKING:
    from .faults import Stop

class TaskStatus(enum.IntEnum):
    """A task's status; the values are the codes of the results file's status enum."""

    NOT_RUN = 0
    OK = 1
    FAILED = 2
    SKIPPED = 3
    TIMEOUT = 4
    CRASHED = 5

    @property
    def label(self) -> str:
        """The name in the results file and in `mtcmpi report`: 'not-run', 'ok', ..."""
        return self.name.lower().replace("_", "-")


NOT_RUN, OK, FAILED, SKIPPED, TIMEOUT, CRASHED = TaskStatus
STATUS_NAMES = {int(s): s.label for s in TaskStatus}
DONE = [OK, SKIPPED]                        # a resumed run never repeats these
FAILED_STATES = [FAILED, TIMEOUT, CRASHED]  # repeated only with --retry-failed


class Skipped(Exception):
    """Raised by a task whose work is already done (e.g. its output is newer than its input)."""


class TaskTimeout(Exception):
    """The task ran past --timeout and was killed; recorded with status timeout."""

    mtcmpi_status = TIMEOUT   # a name no user exception has (HTTPError.status is 404, say)


class TaskCrashed(Exception):
    """The process running the task died (a signal, os._exit); recorded with status crashed."""

    mtcmpi_status = CRASHED


class Failure:
    """Why a task failed, as data that can travel and be stored: no live exception objects.
    (A plain class, as every record each rank loads: see world.World. Journals pickle it, and a
    plain class reads the ones a dataclass wrote before.)"""

    def __init__(self, type: str, message: str, traceback: str):
        self.type, self.message, self.traceback = type, message, traceback


class TaskLog:
    """The tasks one rank ran, in the order it ran them."""

    def __init__(self, rank: int, host: str, pid: int):
        self.rank, self.host, self.pid = rank, host, pid
        self.ids, self.starts, self.ends, self.status = array("q"), array("d"), array("d"), array("b")
        self.results: dict[int, Any] = {}   # only tasks that returned non-None
        self.failures: dict[int, Failure] = {}
        self.groups: dict[int, tuple[list[int], list[str]]] = {}   # parallel tasks this rank led:
        # task id -> (member ranks, their hosts); see groups.py, output/members.py

    def run(self, chunk: Iterable[tuple[int, Any]], invoke: Callable[[Any], Any],
            clock: Callable[[], float], stop: "Stop") -> tuple[int, int, float]:
        """Run tasks, record each, until stop says no more; returns (tasks run, failed, busy
        seconds) and tells stop about them. The hot loop."""
        ids, starts, ends, status = self.ids.append, self.starts.append, self.ends.append, self.status.append
        results = self.results
        n = failed = 0
        busy = 0.0
        limited = stop.deadline is not None or stop.max_failures is not None
        look_at = 0.0   # before_task: before every task with a limit, else once a CHECK_EVERY
        for tid, payload in chunk:
            t0 = clock()
            # one attribute read and one comparison: a method call here cost 25% at 1M tasks/s
            if stop.reason is not None:
                break
            if t0 >= look_at:
                if stop.before_task(t0, n, failed, busy):
                    break
                look_at = -math.inf if limited else t0 + CHECK_EVERY
            try:
                value = invoke(payload)
            except Skipped:
                t1 = clock()
                status(SKIPPED)
            except BaseException as exc:   # SystemExit, KeyboardInterrupt, CancelledError too:
                t1 = clock()                # a task's, never the rank's way out
                self.failures[tid] = self.failure(tid, exc)
                status(getattr(type(exc), "mtcmpi_status", FAILED))
                failed += 1
            else:
                t1 = clock()
                if value is not None:
                    results[tid] = value
                status(OK)
            ids(tid)
            starts(t0)
            ends(t1)
            busy += t1 - t0
            n += 1
        stop.observe(n, failed, busy)
        return n, failed, busy

    def finals(self, retried: dict[int, tuple[int, int]]):
        """With retries: (indexes of the records that stand for their task here, tries of each).

        A task tried several times on this rank is its last record; a task whose last try was on
        another rank (retried: task id -> (rank, tries), from the master) is not this rank's.
        """
        import numpy as np

        ids = np.frombuffer(self.ids, np.int64) if len(self.ids) else np.empty(0, np.int64)
        tasks, first_of_reversed, tries = np.unique(ids[::-1], return_index=True, return_counts=True)
        last = len(ids) - 1 - first_of_reversed
        keep = np.ones(len(tasks), bool)
        for tid, (rank, count) in retried.items():
            i = np.searchsorted(tasks, tid)
            if i < len(tasks) and tasks[i] == tid:
                keep[i], tries[i] = rank == self.rank, count
        return last[keep], tries[keep]

    def host_width(self, extra: int = 1) -> int:
        """Bytes of the results file's host field that this rank's host needs (extra: others')."""
        return max(1, extra, len(self.host.encode()))

    def mark_failed(self, failures: dict[int, Failure]) -> dict[int, Failure]:
        """Record as failed the tasks of failures that this rank ran (their result did not fit
        the run's rule, output/values.py), every try of them; returns those."""
        mine: dict[int, Failure] = {}
        if failures:
            for i, tid in enumerate(self.ids):
                if tid in failures:
                    self.status[i] = FAILED
                    mine[tid] = failures[tid]
            self.failures.update(mine)
        return mine

    def failure(self, tid: int, exc: BaseException) -> Failure:
        """An exception as data, its traceback headed with where it happened."""
        return Failure(*describe(exc, f"task {tid} failed on rank {self.rank}, host {self.host}, "
                                      f"pid {self.pid}:\n"))
