"""One run from start to summary, for the CLI and the Python API alike.

Input is checked the same way on every rank (the target is imported everywhere, the task list
is counted and checked once on rank 0) and the verdict is agreed collectively, so bad input
ends every rank with one message instead of a hang or a traceback per rank.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from mpi4py import MPI

from . import engine, report
from .errors import EXIT_OK, EXIT_TASKS_FAILED, UsageError
from .policies import Policy, Static
from .tasklog import TaskLog
from .tasks import Source, check_call, first_task, invoker, resolve
from .world import World

_IMPORTED = time.time()


def process_start() -> float:
    """When this process started (epoch seconds), from /proc; else when mtcmpi was imported."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def launch_time(world: World) -> float:
    """The job's launch: MTCMPI_LAUNCH_TIME if the launcher set it, else the first rank's start."""
    given = os.environ.get("MTCMPI_LAUNCH_TIME")
    return float(given) if given else world.comm.allreduce(process_start(), op=MPI.MIN)


def prepare(world: World, target: str | Callable, source: Source) -> tuple[Callable, int]:
    """Resolve the target on every rank and count/check the tasks on rank 0; agree on errors."""
    fn, error = None, None
    try:
        fn = resolve(target) if isinstance(target, str) else target
    except UsageError as exc:
        error = str(exc)
    world.agree(error)
    n = 0
    if world.rank == 0:
        try:
            n = source.count()
            first = first_task(source)
            if first is not None:
                check_call(fn, source.call, first[1], source.describe(first[0]))
        except UsageError as exc:
            error = str(exc)
    world.agree(error)
    return fn, world.comm.bcast(n, root=0)


@dataclass
class Outcome:
    """What a run left on this rank: its own log, the summary (rank 0 only) and the exit code."""

    n: int
    log: TaskLog
    summary: report.Summary | None
    exit_code: int


def run_job(world: World, target: str | Callable, source: Source, policy: Policy) -> Outcome:
    """Check, run and summarise one task list on every rank of `world` (collective)."""
    launched = launch_time(world)
    fn, n = prepare(world, target, source)
    world.barrier()
    started = time.time()
    log = engine.execute(world, invoker(fn, source.call), source, n, policy)
    parts = world.comm.gather(report.condense(log), root=0)
    summary = None
    if world.rank == 0:
        total = report.merge(parts)
        workers = world.size if world.size == 1 or isinstance(policy, Static) else world.size - 1
        summary = report.Summary(n, world.size, workers, describe(policy), started - launched,
                                 time.time() - started, total)
    code = world.comm.bcast(EXIT_TASKS_FAILED if summary and summary.total.failed else EXIT_OK, root=0)
    return Outcome(n, log, summary, code)


def describe(policy: Policy) -> str:
    """A policy as the summary names it, e.g. 'dynamic, chunk auto, prefetch 1'."""
    if isinstance(policy, Static):
        return policy.name
    ahead = "auto" if policy.prefetch_below < float("inf") else policy.prefetch
    return f"{policy.name}, chunk {policy.chunk or 'auto'}, prefetch {ahead}"
