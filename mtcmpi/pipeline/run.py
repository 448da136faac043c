"""`mtcmpi pipeline FILE.py`: plan on every rank, then rank 0 drives the tasks over an Executor.

Every rank loads the pipeline file and plans it (so a bad graph is one agreed error, exit 2
everywhere, and workers run a task from its id alone: no function travels). Rank 0 decides what
is up to date, submits the rest with their input tasks' futures as arguments (mtcmpi.graph: a
task starts as soon as its own inputs are done), and appends each finished task to a journal
(<out>.journal, one JSON line, flushed and fsynced per task). A task is up to date when the
journal says it finished, its outputs still have the times recorded then, and no input is newer;
so a half-written output of a killed task is never taken as done, and a rerun redoes only what
an edited input feeds. At the end rank 0 writes the per-task record (record.py).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import Future, wait
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from ..graph import DependencyError

if TYPE_CHECKING:
    from .stages import Plan, Task

EXIT_STOPPED = 75
_plan: Plan | None = None      # the plan of this rank, which run_task reads
_where: tuple[int, str, int] = (0, socket.gethostname(), os.getpid())


class TaskError(Exception):
    """A pipeline task that failed (or timed out), with the record of where and when."""

    def __init__(self, record: dict, message: str):
        super().__init__(message)
        self.record = record

    def __reduce__(self):
        return TaskError, (self.record, self.args[0])


class TaskTimeout(Exception):
    """A function task still running after --timeout seconds."""


def run_task(tid: str, _inputs: list, retries: int, timeout: float | None) -> dict:
    """On any rank: run task tid of the plan (up to retries more times if it fails); its
    record, or TaskError. _inputs are the values of the tasks it waited for (unused)."""
    from ..commands import CommandRunner, CommandTask
    from .stages import call_arguments, command_line

    task = _plan.tasks[tid]
    for path in task.outputs:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    record = dict(zip(("rank", "host", "pid"), _where), start=time.time(), attempts=0)
    while True:
        record["attempts"] += 1
        try:
            if task.stage.command is not None:
                CommandRunner(timeout=timeout)(CommandTask(0, command_line(task), None, None))
            else:
                with time_limit(timeout):
                    task.stage.run(*call_arguments(task))
            missing = [p for p in task.outputs if not os.path.exists(p)]
            if missing:
                raise FileNotFoundError(f"task {tid} did not make {', '.join(missing)}")
            record.update(end=time.time(), status="ok")
            return record
        except (Exception, SystemExit) as exc:   # a task's exit ends the task only
            if record["attempts"] <= retries:
                continue
            timed_out = isinstance(exc, TaskTimeout) or "timed out" in str(exc)
            record.update(end=time.time(), status="timeout" if timed_out else "failed",
                          type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
            raise TaskError(record, f"{tid}: {type(exc).__name__}: {exc}") from None


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TaskTimeout in the running function after seconds (main thread only: on one rank
    tasks run in a thread, and there --timeout applies to command stages only)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TaskTimeout(f"still running after {seconds} s (--timeout)")
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Journal:
    """The finished tasks of every run of one pipeline output: JSON lines, the last one per
    task wins; appended, flushed and fsynced per task on rank 0."""

    def __init__(self, path: str, restart: bool):
        self.path, self.restart = path, restart
        self.last: dict[str, dict] = {}
        self.file = None               # opened on the first append: a dry run changes nothing
        self.lock = threading.Lock()
        if os.path.exists(path) and not restart:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self.last[entry["task"]] = entry
                    except (ValueError, KeyError):   # a line cut short by a kill
                        continue

    def append(self, entry: dict) -> None:
        with self.lock:
            if self.file is None:
                self.file = open(self.path, "w" if self.restart else "a", encoding="utf-8")
            self.last[entry["task"]] = entry
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())


def mtimes(paths: list[str]) -> dict[str, int] | None:
    """Modification times (ns) of paths, or None if one is missing."""
    try:
        return {p: os.stat(p).st_mtime_ns for p in paths}
    except OSError:
        return None


def up_to_date(task: Task, entry: dict | None) -> bool:
    """Finished by an earlier run, outputs untouched since, and no input newer than them."""
    if not entry or entry.get("status") != "ok":
        return False
    outs = mtimes(task.outputs)
    if outs is None or outs != entry.get("mtimes"):
        return False
    ins = mtimes(task.inputs)
    return ins is not None and max(ins.values(), default=0) <= min(outs.values(), default=0)


def decide(plan: Plan, journal: Journal, retry_failed: bool) -> dict[str, str]:
    """Per task: 'current' (skip), 'run', 'failed' (failed earlier; runs with --retry-failed)
    or 'blocked' (waits for a failed task)."""
    state: dict[str, str] = {}
    for tid in plan.order:
        task, entry = plan.tasks[tid], journal.last.get(tid)
        waits = {state[w] for w in task.waits}
        if waits & {"failed", "blocked"}:
            state[tid] = "blocked"
        elif "run" not in waits and up_to_date(task, entry):
            state[tid] = "current"
        elif entry and entry.get("status") in ("failed", "timeout") and not retry_failed and "run" not in waits:
            state[tid] = "failed"
        else:
            state[tid] = "run"
    return state


def dry_run(path: str, plan: Plan, state: dict[str, str]) -> None:
    """Print the stages, their task counts, and what is up to date and what would run."""
    words = {"current": "up to date", "run": "would run", "failed": "failed earlier (--retry-failed)",
             "blocked": "not run: input failed"}
    counts = {w: sum(s == k for s in state.values()) for k, w in words.items()}
    print(f"pipeline {path}: {len(plan.stages)} stages, {len(state)} tasks: "
          + ", ".join(f"{n} {w}" for w, n in counts.items() if n))
    for stage in plan.stages:
        mine = [state[t.id] for t in plan.tasks.values() if t.stage is stage]
        after = sorted({w.split(":")[0] for t in plan.tasks.values() if t.stage is stage for w in t.waits})
        what = ", ".join(f"{sum(s == k for s in mine)} {w}" for k, w in words.items() if k in mine)
        print(f"  {stage.name:<16} {stage.kind:<9} {len(mine):>6} tasks: {what}"
              + (f"  (after {', '.join(after)})" if after else ""))


class Driver:
    """Rank 0: submit the tasks to run, journal each as it ends, stop on failures or signals."""

    def __init__(self, ex, plan: Plan, state: dict[str, str], journal: Journal, args):
        self.ex, self.plan, self.state, self.journal, self.args = ex, plan, state, journal, args
        self.futures: dict[str, Future] = {}
        self.failures = 0
        self.stopped: str | None = None
        self.lock = threading.Lock()

    def run(self) -> None:
        for tid in self.plan.order:
            if self.state[tid] != "run":
                continue
            waits = [self.futures[w] for w in self.plan.tasks[tid].waits if w in self.futures]
            future = self.ex.submit(run_task, tid, waits, self.args.retries, self.args.timeout)
            self.futures[tid] = future
            future.add_done_callback(lambda f, tid=tid: self.finished(tid, f))
        with stop_on_signals(self.stop):
            wait(list(self.futures.values()))

    def finished(self, tid: str, future: Future) -> None:
        task = self.plan.tasks[tid]
        entry = {"task": tid, "stage": task.stage.name, "waits": task.waits}
        if future.cancelled():
            entry.update(status="not-run", message=f"not run: {self.stopped or 'cancelled'}")
        elif isinstance(future.exception(), TaskError):
            entry.update(future.exception().record)
        elif isinstance(future.exception(), DependencyError):
            failed = next((w for w in task.waits if self.blocked(w)), "?")
            entry.update(status="not-run", type="DependencyError", message=f"not run: input failed: {failed}")
        elif future.exception() is not None:   # the Executor could not run it (say a broken worker)
            error = future.exception()
            entry.update(status="failed", type=type(error).__name__, message=str(error))
        else:
            entry.update(future.result(), mtimes=mtimes(task.outputs))
        self.journal.append(entry)
        if entry["status"] in ("failed", "timeout"):
            with self.lock:
                self.failures += 1
                limit = self.args.max_failures
                if limit is not None and self.failures >= limit:
                    self.stop(f"--max-failures {limit} reached")

    def blocked(self, tid: str) -> bool:
        future = self.futures.get(tid)
        return future is not None and future.done() and not future.cancelled() and future.exception() is not None

    def stop(self, why: str) -> None:
        """Start no more tasks: cancel every one not yet running (their dependents follow)."""
        self.stopped = self.stopped or why
        for future in list(self.futures.values()):
            future.cancel()


@contextmanager
def stop_on_signals(stop) -> Iterator[None]:
    """SIGINT/SIGTERM on rank 0: no new task starts; what finished is already journalled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = lambda signum, frame: stop(f"signal {signal.Signals(signum).name}")  # noqa: E731
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def pipeline_main(args) -> int:
    """Collective: check, plan, then run (or --dry-run) a pipeline file; the exit status."""
    global _plan, _where
    from ..futures import executor
    from ..world import World
    from .stages import load

    world = World.of()
    _where = (world.rank, world.host, world.pid)
    plan = load(args.pipeline)
    problems = plan.problems + [p for p in option_problems(args)]
    world.agree("; ".join(problems) if problems else None)
    _plan = plan
    out = args.out or os.path.splitext(os.path.basename(args.pipeline))[0] + ".h5"
    code = 0
    if world.rank == 0:
        journal = Journal(out + ".journal", args.restart)
        state = decide(plan, journal, args.retry_failed)
        if args.dry_run:
            dry_run(args.pipeline, plan, state)
    if args.dry_run:
        return 0
    started = time.time()
    with executor() as ex:
        if ex is not None:
            driver = Driver(ex, plan, state, journal, args)
            driver.run()
    if world.rank == 0:
        code = finish(args, out, plan, state, journal, driver, world.size, started)
    return world.comm.bcast(code, root=0)


def option_problems(args) -> Iterator[str]:
    if args.timeout is not None and not args.timeout > 0:
        yield f"--timeout must be > 0, not {args.timeout}"
    if args.retries < 0:
        yield f"--retries must be >= 0, not {args.retries}"
    if args.max_failures is not None and args.max_failures < 1:
        yield f"--max-failures must be >= 1, not {args.max_failures}"


def finish(args, out: str, plan: Plan, state: dict[str, str], journal: Journal, driver: Driver,
           ranks: int, started: float) -> int:
    """Rank 0: the record file, a summary, and the exit status."""
    from .record import write_record

    rows = []
    for tid in plan.order:
        entry = dict(journal.last.get(tid) or {}) if state[tid] != "current" else {}
        if state[tid] == "current":
            entry.update(status="skipped")
        elif state[tid] == "blocked":
            failed = next(w for w in plan.tasks[tid].waits if state[w] in ("failed", "blocked"))
            entry = {"status": "not-run", "type": "DependencyError", "message": f"not run: input failed: {failed}"}
        entry.update(task=tid, stage=plan.tasks[tid].stage.name, waits=plan.tasks[tid].waits)
        rows.append(entry)
    write_record(out, rows, [s.name for s in plan.stages], ranks, started, " ".join(sys.argv))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(f"mtcmpi pipeline: {len(rows)} tasks in {time.time() - started:.2f} s: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + (f"; stopped: {driver.stopped}" if driver.stopped else "") + f"\n  record: {out}", flush=True)
    if driver.stopped and driver.stopped.startswith("signal"):
        return EXIT_STOPPED
    return 0 if set(counts) <= {"ok", "skipped"} else 1
