"""One try of one pipeline task, on the rank the Executor gave it to (rank 0 with one rank).

Every rank holds the plan (run.py loads it everywhere), so a task travels as its id alone. A
task runs as `run` runs its tasks: a function stage in this process, or under --timeout or
--isolate in a forked child of it (isolate.Isolated, one per stage, reused task after task:
a task stuck in C code is killed at the limit, a crash fails its task alone); a command stage
through CommandRunner, whose --timeout kills the shell's process group. A rank whose Stop says
no more (a signal, the walltime) starts no task: the task comes back NotStarted.
"""
from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import describe
from ..tasklog import FAILED, TaskStatus

if TYPE_CHECKING:
    from ..faults import Stop
    from ..options import RunOptions
    from .stages import Plan, Task


class TaskError(Exception):
    """A try of a pipeline task that failed, timed out or crashed, with its record."""

    def __init__(self, record: dict, message: str):
        super().__init__(message)
        self.record = record

    def __reduce__(self):
        return TaskError, (self.record, self.args[0])


class NotStarted(Exception):
    """A task a rank did not start because its Stop says no more (the reason is the message)."""


class Runner:
    """This rank's way to run tasks of a plan: where it is, its options, its Stop, its children."""

    def __init__(self, plan: Plan, options: RunOptions, stop: Stop, where: tuple[int, str, int]):
        self.plan, self.options, self.stop, self.where = plan, options, stop, where
        self.isolated: dict[str, Callable[[Any], Any]] = {}   # stage name -> its Isolated child

    def invoke(self, task: Task) -> Callable[[Any], Any]:
        """The call of a function stage's run(inputs, outputs): direct, or in a child process
        under --timeout or --isolate (as task_invoker does for `run`)."""
        stage = task.stage
        if self.options.timeout is None and not self.options.isolate:
            return lambda arguments: stage.run(*arguments)
        if stage.name not in self.isolated:
            from ..isolate import Isolated
            from ..tasks import CALL_STAR

            self.isolated[stage.name] = Isolated(stage.run, CALL_STAR, self.options.timeout)
        return self.isolated[stage.name]

    def stopped(self) -> bool:
        """Whether this rank's Stop says start no task (its handlers kept, on the main thread)."""
        if threading.current_thread() is threading.main_thread():
            return self.stop.before_task(time.time())
        return self.stop.reason is not None

    def run(self, tid: str, attempt: int) -> dict:
        """One try of task tid: its record, or TaskError (NotStarted if this rank stops)."""
        from ..commands import CommandRunner, CommandTask
        from .stages import call_arguments, command_line

        if self.stopped():
            raise NotStarted(self.stop.reason)
        task = self.plan.tasks[tid]
        rank, host, pid = self.where
        record = dict(rank=rank, host=host, pid=pid, start=time.time(), attempts=attempt)
        try:
            for path in task.outputs:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            if task.stage.command is not None:
                CommandRunner(timeout=self.options.timeout)(CommandTask(0, command_line(task), None, None))
            else:
                self.invoke(task)(call_arguments(task))
            missing = [p for p in task.outputs if not os.path.exists(p)]
            if missing:
                raise FileNotFoundError(f"task {tid} did not make {', '.join(missing)}")
        except BaseException as exc:   # SystemExit, KeyboardInterrupt too: the task's, not the rank's
            text = describe(exc, f"task {tid} failed on rank {rank}, host {host}, pid {pid}:\n")
            status = TaskStatus(getattr(type(exc), "mtcmpi_status", FAILED)).label
            record.update(end=time.time(), status=status, type=text.type, message=text.message,
                          traceback=text.traceback)
            raise TaskError(record, f"{tid}: {text.line}") from None
        record.update(end=time.time(), status="ok")
        return record

    def close(self) -> None:
        """End the child processes of --timeout/--isolate."""
        for child in self.isolated.values():
            child.close()
        self.isolated.clear()


_runner: Runner | None = None   # this rank's, set by run.py before the Executor starts


def run_task(tid: str, _inputs: list, attempt: int) -> dict:
    """What the Executor calls on a rank: one try of task tid (_inputs: the values of the tasks
    it waited for, which only order it)."""
    return _runner.run(tid, attempt)


def serve_with(runner: Runner | None) -> None:
    """Make runner this rank's (None: no more)."""
    global _runner
    if _runner is not None and runner is None:
        _runner.close()
    _runner = runner
