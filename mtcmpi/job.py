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

from . import engine, report, startup
from .consistency import code_error, what_runs
from .errors import EXIT_STOPPED, UsageError
from .options import RunOptions
from .policies import Kind, Policy, Static
from .protocol import FACTS
from .tasklog import TaskLog
from .tasks import Source, check_call, first_task, invoker, resolve
from .startup import process_start
from .world import World

if TYPE_CHECKING:   # imported where used: a rank imports no more than its run needs (startup.py)
    import numpy as np

    from .isolate import Isolated
    from .output import Output


class Prepared(NamedTuple):
    """What every rank knows before the run, and what only rank 0 holds (keys, costs)."""

    fn: Callable
    policy: Policy
    output: Output | None
    n: int
    deadline: float | None            # when to start no more tasks (options.deadline, rank 0's)
    launched: float                   # the job's launch (MTCMPI_LAUNCH_TIME, else the first rank's start)
    fingerprint: str                  # rank 0: the task list's digest ("" elsewhere)
    keys: np.ndarray | None = None    # rank 0, with --out: each task's key (tasks.task_key)
    costs: np.ndarray | None = None   # rank 0, with --cost/--costs-from: each task's cost


def prepare(world: World, target: str | Callable, source: Source, options: RunOptions,
            comm: bool = False, early: str | None = None) -> Prepared:
    """Collective start-up in one round: every rank makes its policy and results file and
    imports the target; rank 0 then counts and checks the tasks (comm: parallel tasks, called
    with a `comm` too), fingerprints them (--out), estimates their costs and reads the
    deadline, while the others wait quietly; it sends them its facts, against which every rank
    compares the code it runs; one agreement on every error. (Each collective here costs every
    rank a round of waits: there were nine, 0.3 s of a 64-rank start-up.) `early`: an error
    this rank had before (the CLI's options), agreed on with the rest."""
    def local() -> tuple[Policy, Output | None, Callable]:
        if early:
            raise UsageError(early)
        policy, output = options.policy(), options.output()
        if output and world.rank == 0:
            output.preload()
        fn = resolve(target) if isinstance(target, str) else target
        return policy, output, fn

    made, error, unexpected = world.attempt(local)
    startup.mark("resolved")
    policy, output, fn = made or (None, None, None)
    checked = None
    if world.rank == 0 and error is None:
        checked, error, unexpected = world.attempt(lambda: (
            what_runs(fn) if world.size > 1 else {},
            *check_tasks(fn, target, source, options, output is not None, comm), options.deadline()))
    startup.mark("tasks")   # the others: rank 0's checks are their wait
    view, n, digest, keys, estimate, deadline = checked or (None, 0, "", None, None, None)
    view, n, deadline = world.from_rank_0((view, n, deadline), FACTS)   # its checks may take a while
    if view is not None and error is None:   # rank 0 had no error: compare with what it runs
        error = code_error(world, fn, view)
    given = os.environ.get("MTCMPI_LAUNCH_TIME")
    first_start = world.agree(error, unexpected, least=process_start())
    startup.mark("same_code")
    return Prepared(fn, policy, output, n, deadline, float(given) if given else first_start,
                    digest, keys, estimate)


def check_tasks(fn: Callable, target: str | Callable, source: Source, options: RunOptions,
                fingerprint: bool, comm: bool) -> tuple[int, str, np.ndarray | None, np.ndarray | None]:
    """Rank 0: count the tasks, check the first against fn's signature, and with --out or costs
    fingerprint the list and estimate the costs: (n, digest, keys, costs)."""
    n, keys, estimate = source.count(), None, None
    first = first_task(source)
    if first is not None:
        check_call(fn, source.call, first[1], source.describe(first[0]), comm)
    costs = options.costs()   # numpy: on rank 0 only
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
            options: RunOptions | None = None, error: str | None = None) -> Outcome:
    """Check, run and summarise one task list on every rank of `world` (collective), as
    `options` say (the CLI's and the API's alike); `error`: this rank's own already (the
    CLI's bad options), which every rank then stops on.

    The stop limits (walltime, failures) and the batch system's signals are caught for the
    length of the call; a run they stop ends like any other, with everything stored. Progress
    is shown by rank 0 alone."""
    options = options or RunOptions()
    options.configure_logging(world.rank)
    retries, progress = options.retries, options.progress() if world.rank == 0 else None
    stop = options.stop(None)   # its deadline is rank 0's, shared by prepare
    isolated = output = None

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
        sized = options.ranks_per_task is not None or options.ranks is not None
        fn, policy, output, n, stop.deadline, launched, fingerprint, keys, estimate = prepare(
            world, target, source, options, sized, error)
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
        started = time.time()   # every rank is here: prepare's agreement (and begin) waited for all
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
