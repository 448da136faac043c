"""Helpers for tests: start `mpiexec ... python -m mtcmpi` as a subprocess, and wait with a
deadline for a condition (tasks in a journal)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scaling"))
from _mpirun import (MPI_ENV, command, end_job, environment, job_processes,  # noqa: E402,F401
                     launcher, ranks_of, run, signal_job, start)   # one way to start MPI jobs,
# shared with the benchmarks


def mtcmpi(args: list[str], ranks: int | None = 2, cwd: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `mpiexec -n ranks python -m mtcmpi ARGS` (or without mpiexec if ranks is None), with
    cwd also on PYTHONPATH; past the timeout the whole job is killed."""
    path = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH")) if p)
    return run(ranks, ["-m", "mtcmpi", *args], timeout, env={"PYTHONPATH": path}, cwd=cwd)


def wait_until(condition, timeout: float = 30, what: str = "the condition"):
    """Poll condition until it returns something true, and return that; fail after timeout
    seconds with a message that names what was waited for."""
    end = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return found


def journalled(out: str) -> set[int]:
    """The ids of the tasks in the journal of results file `out` so far."""
    from mtcmpi.output import journal   # here: test modules that are task modules must not load numpy
    return {int(t) for frame in journal.read(out) for t in frame.ids}


def wait_journalled(out: str, count: int = 1, timeout: float = 60) -> set[int]:
    """Wait until at least `count` tasks of a running job are in the journal of `out`; their ids."""
    return wait_until(lambda: len(ids := journalled(out)) >= count and ids, timeout,
                      f"{count} journalled task(s) of {out}")
