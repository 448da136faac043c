"""One run from start to summary, for the CLI and the Python API alike.

Input is checked the same way on every rank (the target is imported everywhere, the task list
is counted and checked once on rank 0) and the verdict is agreed collectively, so bad input
ends every rank with one message instead of a hang or a traceback per rank.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from mpi4py import MPI

from . import engine, report, startup
from .consistency import check_same_code
from .errors import EXIT_STOPPED, UsageError
from .faults import GraceExpired, Stop
from .policies import Policy, Static
from .progress import Progress
from .tasklog import TaskLog
from .tasks import Source, check_call, first_task, invoker, resolve
from .startup import process_start
from .world import World

if TYPE_CHECKING:   # imported where used: a rank imports no more than its run needs (startup.py)
    import numpy as np

    from .costs import CostSpec
    from .isolate import Isolated
    from .output import Output
    from .results import Normalizer

def launch_time(world: World) -> float:
    """The job's launch: MTCMPI_LAUNCH_TIME if the launcher set it, else the first rank's start."""
    given = os.environ.get("MTCMPI_LAUNCH_TIME")
    return float(given) if given else world.comm.allreduce(process_start(), op=MPI.MIN)


class Prepared(NamedTuple):
    """What every rank knows before the run, and what only rank 0 holds (keys, costs)."""

    fn: Callable
    n: int
    fingerprint: str
    keys: np.ndarray | None = None    # rank 0, with --out: each task's key (tasks.task_key)
    costs: np.ndarray | None = None   # rank 0, with a CostSpec: each task's cost


def prepare(world: World, target: str | Callable, source: Source, fingerprint: bool,
            costs: CostSpec | None = None) -> Prepared:
    """Resolve the target on every rank and check that all run the same code; count and check
    the tasks on rank 0, fingerprint them for --out and estimate their costs; agree on errors."""
    fn, error = None, None
    try:
        fn = resolve(target) if isinstance(target, str) else target
    except UsageError as exc:
        error = str(exc)
    startup.mark("resolved")
    world.agree(error)
    check_same_code(world, fn)
    startup.mark("same_code")
    n, digest, keys, estimate = 0, hashlib.sha256(name_of(target).encode()), None, None
    if world.rank == 0:
        try:
            n = source.count()
            first = first_task(source)
            if first is not None:
                check_call(fn, source.call, first[1], source.describe(first[0]))
            if fingerprint or (costs and costs.previous):
                keys = source.fingerprint(digest)
                keys = keys if keys is not None and len(keys) == n else None
            if costs:
                estimate = costs.estimate(source, n, digest.hexdigest(), keys)
        except UsageError as exc:
            error = str(exc)
    world.agree(error)
    startup.mark("tasks")
    return Prepared(fn, world.comm.bcast(n, root=0), digest.hexdigest(), keys, estimate)


def name_of(target: str | Callable) -> str:
    """A target as 'module:function', also for a callable passed by the API or the CLI."""
    if isinstance(target, str):
        return target
    kind = target if hasattr(target, "__qualname__") else type(target)
    return f"{kind.__module__}:{kind.__qualname__}"


@dataclass
class Outcome:
    """What a run left on this rank: its own log, the summary (rank 0 only) and the exit code."""

    n: int
    log: TaskLog
    summary: report.Summary | None
    exit_code: int


def run_job(world: World, target: str | Callable, source: Source, policy: Policy,
            output: Output | None = None, stop: Stop | None = None, retries: int = 0,
            timeout: float | None = None, isolate: bool = False,
            costs: CostSpec | None = None, progress: Progress | None = None) -> Outcome:
    """Check, run and summarise one task list on every rank of `world` (collective).

    stop carries the limits (walltime, failures) and catches the batch system's signals for
    the length of the call; a run it stops ends like any other, with everything stored.
    progress, if given, is shown by rank 0 alone."""
    launched = launch_time(world)
    stop = stop or Stop()
    stop.install()   # from start-up on: a stop signal before the first task ends the run at once
    try:
        fn, n, fingerprint, keys, estimate = prepare(world, target, source, output is not None, costs)
        ids: Sequence[int] = range(n)
        invoke, isolated = task_invoker(world, fn, source.call, policy, timeout, isolate)
        log = TaskLog(world.rank, world.host, world.pid)
        if output:
            ids = output.begin(world, n, fingerprint)
            from .results import Normalizer

            normalizer = Normalizer(output.pickled)
            invoke = stored(invoke, normalizer)
            flusher = output.journal(log) if len(ids) else None
            startup.mark("results_file")
        world.barrier()
        started = time.time()
        stop.begin()
        try:
            retried = engine.execute(world, invoke, source, ids, policy, log, stop, retries, estimate,
                                     progress if world.rank == 0 else None)
        except GraceExpired as exc:   # a task outlasted --grace: keep what finished, end the job now
            if output and flusher:
                flusher.stop()
            world.abort(f"mtcmpi: rank {world.rank}: {exc}; finished tasks are in the journal: run "
                        "the same command again to resume", EXIT_STOPPED)
        finally:
            stop.quiet()   # no grace timer while storing; later stop signals change nothing
            if isolated:
                isolated.close()
        if output and flusher:
            flusher.stop()
        finished = written = time.time()   # this rank's tasks are done and journalled
        profile = world.comm.gather(startup.phases(launched, started, log.starts[0] if log.starts else None))
        profile = startup.summarise(profile) if world.rank == 0 else {}
        if output:
            output.finish(world, log, n, {"ranks": world.size, "policy": describe(policy),
                                          "target": name_of(target), "n_tasks": n,
                                          "start_time": started, "fingerprint": fingerprint,
                                          **startup.attributes(profile)},
                          normalizer.pickled_keys, retried if retries else None, keys)
            written = time.time()
        retried = retried if retries else None
        parts = world.comm.gather((report.condense(log, stop.reason, retried), finished), root=0)
        summary = None
        if world.rank == 0:
            total = report.merge([part for part, _ in parts])
            # writing the file starts when the last rank is done (no barrier: it costs ~50 ms
            # on 128 oversubscribed ranks), so that is where the store time starts too
            stored_in = max(0.0, written - max(done for _, done in parts)) if output else 0.0
            workers = report.working_ranks(world.size, describe(policy))
            summary = report.Summary(n, world.size, workers, describe(policy), started - launched,
                                     time.time() - started, total, n - len(ids),
                                     output.earlier_failures(ids) if output else 0, stored_in,
                                     profile)
            if progress:   # static: the display counted rank 0's own share
                mine = workers == world.size
                progress.close(len(log.ids) if mine else total.ran,
                               len(log.failures) if mine else total.failed)
        code = world.comm.bcast(summary.exit_code() if summary else None, root=0)
        return Outcome(n, log, summary, code)
    finally:
        stop.uninstall()


def task_invoker(world: World, fn: Callable, call: str, policy: Policy, timeout: float | None,
                 isolate: bool) -> tuple[Callable[[Any], Any], Isolated | None]:
    """This rank's invoke: fn, or fn in a child process under --timeout/--isolate. Not for
    command tasks (their shells run apart and take --timeout themselves) nor on a master."""
    runs_tasks = world.size == 1 or isinstance(policy, Static) or world.rank != 0
    if timeout is None and not isolate or not runs_tasks:
        return invoker(fn, call), None
    from .commands import CommandRunner
    from .isolate import Isolated

    if isinstance(fn, CommandRunner):
        return invoker(fn, call), None
    isolated = Isolated(fn, call, timeout)
    return isolated, isolated


def stored(invoke: Callable[[Any], Any], normalize: Normalizer) -> Callable[[Any], Any]:
    """invoke, with its result checked and turned into arrays inside the task (see results.py)."""
    return lambda payload: normalize(invoke(payload))


def describe(policy: Policy) -> str:
    """A policy as the summary names it, e.g. 'dynamic, chunk auto, prefetch auto'."""
    if isinstance(policy, Static):
        return policy.name + (", equal-cost shares" if policy.by_cost else "")
    ahead = "auto" if policy.prefetch_below < float("inf") else policy.prefetch
    order = ", longest first" if policy.by_cost else ""
    return f"{policy.name}, chunk {policy.chunk or 'auto'}, prefetch {ahead}{order}"
