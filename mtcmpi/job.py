"""One run from start to summary, for the CLI and the Python API alike.

Input is checked the same way on every rank (the target is imported everywhere, the task list
is counted and checked once on rank 0) and the verdict is agreed collectively, so bad input
ends every rank with one message instead of a hang or a traceback per rank.
"""
from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from mpi4py import MPI

from . import engine, report, startup
from .consistency import check_same_code
from .errors import EXIT_STOPPED, UsageError
from .options import RunOptions
from .policies import Kind, Policy, Static
from .tasklog import TaskLog
from .tasks import Source, check_call, first_task, invoker, resolve
from .startup import process_start
from .world import World

if TYPE_CHECKING:   # imported where used: a rank imports no more than its run needs (startup.py)
    import numpy as np

    from .costs import CostSpec
    from .isolate import Isolated


def launch_time(world: World) -> float:
    """The job's launch: MTCMPI_LAUNCH_TIME if the launcher set it, else the first rank's start."""
    given = os.environ.get("MTCMPI_LAUNCH_TIME")
    return float(given) if given else world.comm.allreduce(process_start(), op=MPI.MIN)


class Prepared(NamedTuple):
    """What every rank knows before the run, and what only rank 0 holds (keys, costs)."""

    fn: Callable
    n: int
    fingerprint: str                  # rank 0: the task list's digest ("" elsewhere)
    keys: np.ndarray | None = None    # rank 0, with --out: each task's key (tasks.task_key)
    costs: np.ndarray | None = None   # rank 0, with a CostSpec: each task's cost


def prepare(world: World, target: str | Callable, source: Source, fingerprint: bool,
            costs: CostSpec | None = None, comm: bool = False) -> Prepared:
    """Resolve the target on every rank and check that all run the same code; count and check
    the tasks on rank 0 (comm: parallel tasks, called with a `comm` too), fingerprint them for
    --out and estimate their costs; agree on errors."""
    def resolved() -> Callable:
        fn = resolve(target) if isinstance(target, str) else target
        startup.mark("resolved")   # the wait for the other ranks counts as the same-code check
        return fn

    fn = world.agree_on(resolved)
    check_same_code(world, fn)
    startup.mark("same_code")

    def check_tasks() -> tuple[int, str, np.ndarray | None, np.ndarray | None]:
        n, keys, estimate = source.count(), None, None
        first = first_task(source)
        if first is not None:
            check_call(fn, source.call, first[1], source.describe(first[0]), comm)
        if not (fingerprint or costs):
            return n, "", keys, estimate
        import hashlib   # here: it loads OpenSSL's libcrypto, ~4 ms that no other rank needs

        digest = hashlib.sha256(name_of(target).encode())
        if fingerprint or costs.previous:
            keys = source.fingerprint(digest)
            keys = keys if keys is not None and len(keys) == n else None
        if costs:
            estimate = costs.estimate(source, n, digest.hexdigest(), keys)
        return n, digest.hexdigest(), keys, estimate

    n, digest, keys, estimate = world.agree_on(check_tasks if world.rank == 0 else None) or (0, "", None, None)
    startup.mark("tasks")
    return Prepared(fn, world.comm.bcast(n, root=0), digest, keys, estimate)


def name_of(target: str | Callable) -> str:
    """A target as 'module:function', also for a callable passed by the API or the CLI."""
    if isinstance(target, str):
        return target
    kind = target if hasattr(target, "__qualname__") else type(target)
    return f"{kind.__module__}:{kind.__qualname__}"


class Outcome(NamedTuple):
    """What a run left on this rank: its own log, the summary (rank 0 only) and the exit code."""

    n: int
    log: TaskLog
    summary: report.Summary | None
    exit_code: int


def run_job(world: World, target: str | Callable, source: Source,
            options: RunOptions | None = None) -> Outcome:
    """Check, run and summarise one task list on every rank of `world` (collective), as
    `options` say (the CLI's and the API's alike).

    The stop limits (walltime, failures) and the batch system's signals are caught for the
    length of the call; a run they stop ends like any other, with everything stored. Progress
    is shown by rank 0 alone."""
    options = options or RunOptions()
    options.configure_logging(world.rank)
    error = policy = output = costs = None
    try:
        policy, output = options.policy(), options.output()
        costs = options.costs() if world.rank == 0 else None   # estimated there: numpy nowhere else
    except UsageError as exc:
        error = str(exc)
    world.agree(error)
    retries, progress = options.retries, options.progress() if world.rank == 0 else None
    stop = options.stop(world)
    isolated = None

    def end_now(why: str) -> None:
        """--grace is over or a second Ctrl-C came (from any thread): keep what finished, end the job."""
        if output:
            output.close()
        world.abort(f"mtcmpi: rank {world.rank}: {why}; "
                    + ("finished tasks are in the journal: " if output else "")
                    + "run the same command again to resume", EXIT_STOPPED)

    stop.expired = end_now
    stop.install()   # from start-up on: a stop signal before the first task ends the run at once
    try:
        launched = launch_time(world)
        sized = options.ranks_per_task is not None or options.ranks is not None
        fn, n, fingerprint, keys, estimate = prepare(world, target, source, output is not None, costs,
                                                     sized)
        ids: Sequence[int] = range(n)
        # groups.py (numpy, isolation) only for runs that may have tasks on k ranks: a size
        # option, or command tasks (loaded by then), which may ask for {mpirun}; alike everywhere
        commands = sys.modules.get("mtcmpi.commands")
        parallel = False
        if sized or commands is not None and isinstance(fn, commands.CommandRunner):
            from . import groups

            spec = options.group_spec()
            parallel = groups.needs_groups(world, spec, fn, source)
        if parallel:   # tasks on k ranks: the root's value is what is stored
            sizes = groups.plan(world, spec, fn, source, n, options.isolate, options.timeout)
            policy, invoke = groups.Packed(spec.packing), groups.root_value
        else:
            invoke, isolated = task_invoker(world, fn, source.call, policy, options.timeout,
                                             options.isolate)
        log = TaskLog(world.rank, world.host, world.pid)
        if output:
            ids = output.begin(world, n, fingerprint)
            invoke = output.wrap(invoke, log, stop, len(ids))   # journalled as they finish
            startup.mark("results_file")
        world.barrier()
        started = time.time()
        try:
            if parallel:
                retried = groups.execute(world, fn, source.call, source, ids, sizes, spec.packing, log,
                                         stop, retries, progress, invoke, estimate)
            else:
                retried = engine.execute(world, invoke, source, ids, policy, log, stop, retries,
                                         estimate, progress)
        finally:
            stop.quiet()   # no grace any more while storing; later stop signals change nothing
            if isolated:
                isolated.close()
        if output:
            output.close()
        finished = written = time.time()   # this rank's tasks are done and journalled
        profile = world.comm.gather(startup.phases(launched, started, log.starts[0] if log.starts else None))
        profile = startup.summarise(profile) if world.rank == 0 else {}
        if output:
            output.finish(world, log, n, {"ranks": world.size, "policy": describe(policy),
                                          "target": name_of(target), "n_tasks": n,
                                          "start_time": started, "fingerprint": fingerprint,
                                          **startup.attributes(profile)},
                          retried if retries else None, keys)
            written = time.time()
        retried = retried if retries else None
        parts = world.comm.gather((report.condense(log, stop.reason, retried, stop.kind), finished), root=0)
        summary = None
        if world.rank == 0:
            total = report.merge([part for part, _ in parts])
            # writing the file starts when the last rank is done (no barrier: it costs ~50 ms
            # on 128 oversubscribed ranks), so that is where the engine time ends and the store
            # time starts
            done = max(done for _, done in parts)
            workers = policy.kind.working_ranks(world.size)
            summary = report.Summary(n, world.size, workers, describe(policy), started - launched,
                                     done - started, total, n - len(ids),
                                     output.earlier_failures(ids) if output else 0,
                                     max(0.0, written - done) if output else 0.0,
                                     output.path if output else None, profile)
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


def describe(policy: Policy) -> str:
    """A policy as the summary names it, e.g. 'dynamic, chunk auto, prefetch auto'."""
    if isinstance(policy, Static) or policy.kind is Kind.PARALLEL:
        return policy.name + (", equal-cost shares" if policy.by_cost else "")
    ahead = "auto" if policy.prefetch_below < float("inf") else policy.prefetch
    order = ", longest first" if policy.by_cost else ""
    return f"{policy.name}, chunk {policy.chunk or 'auto'}, prefetch {ahead}{order}"
