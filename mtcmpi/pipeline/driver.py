"""Rank 0 of `mtcmpi pipeline`: submit the tasks to run, journal each as it ends, retry, stop.

Each task to run has an outcome future that its dependents take as an input (mtcmpi.graph: a
task starts as soon as its own inputs are done) and that settles when its last try ends, so a
task tried again keeps its dependents waiting. As for `run`: a failed try goes back to rank 0
and out again to the next free rank, up to --retries more times (the record's attempts counts
them); --max-failures (--fail-fast) failed tries, a stop signal or the walltime (faults.Stop)
start no more tasks: what has not started is cancelled, what runs finishes (or is ended at
--grace), everything finished is already journalled.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ..graph import DependencyError
from .journal import Journal, mtimes
from .task import NotStarted, TaskError, run_task

if TYPE_CHECKING:
    from ..faults import Stop
    from ..futures import Executor
    from .stages import Plan

LOOK_EVERY = 0.2   # seconds between the driver's looks at its Stop (signals, walltime)


class Driver:
    """The tasks of one run of a plan over an Executor, and what became of each."""

    def __init__(self, ex: Executor, plan: Plan, state: dict[str, str], journal: Journal,
                 retries: int, stop: Stop):
        self.ex, self.plan, self.state, self.journal = ex, plan, state, journal
        self.retries, self.stop = retries, stop
        self.outcomes: dict[str, Future] = {}   # task -> settles when its last try ends
        self.tries: dict[str, Future] = {}      # task -> its try submitted last
        self.retrying: dict[str, TaskError] = {}   # task -> the failed try its next try repeats
        self.entries: dict[str, dict] = {}      # task -> how it ended in this run
        self.worker_stop: str | None = None     # a rank that would not start a task says why
        self.left = 0
        self.lock = threading.RLock()
        self.changed = threading.Event()
        self.cancelled = False

    def run(self) -> None:
        """Submit every task to run; wait until each has ended, stopping when told to."""
        to_run = [tid for tid in self.plan.order if self.state[tid] == "run"]
        self.left = len(to_run)
        for tid in to_run:
            self.outcomes[tid] = Future()
            inputs = [self.outcomes[w] for w in self.plan.tasks[tid].waits if w in self.outcomes]
            self.submit(tid, inputs, 1)
        while self.left:
            self.changed.wait(LOOK_EVERY)
            self.changed.clear()
            if not self.cancelled and (self.stop.before_task(time.time()) or self.worker_stop):
                self.cancel()

    @property
    def reason(self) -> str | None:
        """Why the run stopped early, if it did."""
        return self.stop.reason or self.worker_stop

    @property
    def resumable(self) -> bool:
        """Stopped by a signal or the walltime (here or on a worker), not by failures."""
        return self.stop.resumable or self.worker_stop is not None and self.stop.reason is None

    def submit(self, tid: str, inputs: list[Future], attempt: int) -> None:
        future = self.ex.submit(run_task, tid, inputs, attempt)
        with self.lock:
            self.tries[tid] = future
        future.add_done_callback(lambda f: self.tried(tid, f, attempt))

    def tried(self, tid: str, future: Future, attempt: int) -> None:
        """A try ended (on the Executor's thread): journal it, try again, or settle the task."""
        task = self.plan.tasks[tid]
        entry = {"task": tid, "stage": task.stage.name, "waits": task.waits}
        error = None if future.cancelled() else future.exception()
        earlier = self.retrying.pop(tid, None)   # the failed try this one repeats
        if future.cancelled() or isinstance(error, NotStarted):
            if isinstance(error, NotStarted):
                self.worker_stop = self.worker_stop or str(error)
                self.changed.set()
            if earlier is None:
                return self.settle(tid, None, None)
            error = earlier   # a retry that did not start: the task ends with its failed try
            entry.update(error.record)
        elif error is None:
            record = future.result()
            self.stop.observe(1, 0, record["end"] - record["start"])
            entry.update(record, mtimes=mtimes(task.outputs))
        elif isinstance(error, TaskError):
            self.stop.observe(1, 1, error.record["end"] - error.record["start"])
            self.changed.set()   # --max-failures may be reached
            if attempt <= self.retries and self.reason is None and not self.cancelled:
                self.retrying[tid] = error
                return self.submit(tid, [], attempt + 1)
            entry.update(error.record)
        elif isinstance(error, DependencyError):   # not journalled: decide() finds it blocked
            entry.update(status="not-run", type="DependencyError",
                         message=f"not run: input failed: {self.blocked_by(task.waits)}")
            return self.settle(tid, entry, error)
        else:   # mtcmpi's own failure (a broken Executor): the task failed
            entry.update(status="failed", type=type(error).__name__, message=str(error))
        try:
            self.journal.append(entry)
        except OSError as exc:   # a full disk: start nothing more (what is journalled stays)
            self.stop.halt(f"the journal {self.journal.path} cannot be written: {exc}")
            self.changed.set()
        self.settle(tid, entry, error)

    def blocked_by(self, waits: list[str]) -> str | None:
        """The first of waits that failed in this run or waits for one that did."""
        for w in waits:
            outcome = self.outcomes.get(w)
            if outcome is not None and outcome.done() and not outcome.cancelled() and outcome.exception():
                return w
        return None

    def settle(self, tid: str, entry: dict | None, error: BaseException | None) -> None:
        """The task has ended (entry None: it did not start): tell its dependents."""
        outcome = self.outcomes[tid]
        with self.lock:
            if entry is not None:
                self.entries[tid] = entry
            self.left -= 1
            if not self.left:
                self.changed.set()
        if entry is None:
            outcome.cancel()   # a plain Future, not running: wait() and as_completed() hear at once
            outcome.set_running_or_notify_cancel()
        elif error is None:
            outcome.set_result(None)
        else:
            outcome.set_exception(error)

    def cancel(self) -> None:
        """Start no more tasks: cancel every try not yet running (their dependents follow)."""
        self.cancelled = True
        with self.lock:
            tries = list(self.tries.values())
        for future in tries:
            future.cancel()
