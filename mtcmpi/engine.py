"""The engine: run a task list over the ranks of a communicator under a policy.

Static policies run each rank's share with no messages. Self-scheduling (dynamic, guided) makes
rank 0 a master that only hands out chunks; the other ranks are workers that ask for the next
chunk before they run the current one (prefetch), so the round trip hides behind the work.
One rank runs everything in-process. Every path ends with this rank's TaskLog.
"""
from __future__ import annotations

import operator
import time
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from mpi4py import MPI

from . import protocol
from .faults import Retries, Stop
from .policies import Dynamic, Policy, Static
from .tasklog import FAILED_STATES, TaskLog
from .tasks import Source, Task, plain_ids
from .world import World

if TYPE_CHECKING:
    import numpy as np

    from .progress import Progress   # rank 0's alone

clock = time.time  # epoch seconds: task records from different ranks share one time axis


def execute(world: World, invoke: Callable[[Any], Any], source: Source, ids: Sequence[int],
            policy: Policy, log: TaskLog, stop: Stop, retries: int = 0,
            costs: np.ndarray | None = None,
            progress: Progress | None = None) -> dict[int, tuple[int, int]]:
    """Run the tasks `ids` (ascending; all of range(n), or what a resumed run has left) of
    `source` on this rank's part of the world, recording into log, until stop says no more.
    Failed tasks are tried again up to `retries` times. With policy.by_cost, `costs` (rank 0:
    one per task id) order the work. `progress` (rank 0 only) is told how the run goes: by
    the master, or under static policies from rank 0's own share. Returns, on every rank, the
    tasks the master handed out more than once: task id -> (rank of the last try, tries)."""
    if world.size == 1 or isinstance(policy, Static):
        mine = share_of(world, policy, ids, costs)
        tasks = tasks_of(source, mine)
        if progress:
            progress.start(len(mine), "" if world.size == 1 else "rank 0's share: ")
            tasks = watched(tasks, log, progress)
        run_with_retries(log, tasks, source, invoke, stop, retries)
        return {}
    outcome = None
    if world.rank == 0:
        if policy.by_cost:
            from .costs import longest_first   # numpy: imported only with costs

            ids = longest_first(ids, costs)
        outcome = run_master(world, tasks_of(source, ids), len(ids), policy, stop, Retries(retries),
                        progress)
    else:
        run_worker(world, log, invoke, policy, stop, retries > 0)
    return world.comm.bcast(outcome, root=0) if retries else {}


def run_with_retries(log: TaskLog, tasks: Iterator[Task], source: Source,
                     invoke: Callable[[Any], Any], stop: Stop, retries: int) -> None:
    """Run tasks on this rank, then its failures again, up to `retries` more rounds."""
    lo = len(log.ids)
    log.run(tasks, invoke, clock, stop)
    for _ in range(retries):
        failed = [t for t, s in zip(log.ids[lo:], log.status[lo:]) if s in FAILED_STATES]
        if not failed or stop.reason:
            return
        lo = len(log.ids)
        log.run(source.take(failed), invoke, clock, stop)


def share_of(world: World, policy: Static, ids: Sequence[int], costs: np.ndarray | None) -> Sequence[int]:
    """This rank's ids under a static policy: a block, every size-th, or an equal-cost share
    (LPT, computed on rank 0 and scattered)."""
    if world.size == 1:
        return ids
    if policy.by_cost:
        shares = None
        if world.rank == 0:
            from .costs import lpt   # numpy, rank 0 only: the shares it scatters are plain ids

            shares = lpt(ids, costs, world.size)
        return world.comm.scatter(shares, root=0)
    share = policy.share(world.rank, world.size, len(ids))
    return ids[share.start:share.stop:share.step]


def tasks_of(source: Source, ids: Sequence[int]) -> Iterator[Task]:
    """The tasks with these ids, streamed when ascending; numpy ids (rank 0's, by cost) become
    Python ints before they reach a task."""
    if isinstance(ids, range):
        return source.take(ids)
    ids = plain_ids(ids)
    if not all(map(operator.le, ids, islice(ids, 1, None))):
        return source.take_any(ids)
    return source.take(ids)


def watched(tasks: Iterator[Task], log: TaskLog, progress: Progress) -> Iterator[Task]:
    """tasks, telling progress before each one how many of them this rank has run."""
    lo = len(log.ids)
    for task in tasks:
        progress.update(len(log.ids) - lo, len(log.failures), 1)
        yield task


def run_master(world: World, tasks: Iterator[Task], n: int, policy: Dynamic, stop: Stop,
          retries: Retries, progress: Progress | None = None) -> dict[int, tuple[int, int]]:
    """The master: scatter a first chunk to every worker, then answer every request with the
    next chunk (retries first), or an empty one when none is left or stop says no more; tell
    progress what the requests report. Returns the retried tasks' outcome."""
    import logging   # here: the master alone logs, so no worker imports it

    comm, workers = world.comm, world.size - 1
    recv, send = comm.Recv, comm.send
    req, status = protocol.request_buffer(), MPI.Status()
    message = [req, MPI.DOUBLE]
    far = 0 if policy.by_cost else protocol.FAR * workers
    if progress:
        progress.start(n)
    # The first round goes out in one scatter instead of answers to requests that all arrive at
    # once: at 12,288 workers answering them one by one keeps the last worker waiting ~0.1 s
    # (scaling/simulate.py). Each scattered chunk stands for the answer to one request.
    first: list[list[Task]] = [[]]
    remaining = n
    for _ in range(workers):
        chunk = [] if stop.before_task(clock()) else list(islice(tasks, policy.chunk_size(remaining, workers)))
        remaining -= len(chunk)
        first.append(chunk)
    handed = n - remaining
    comm.scatter([(chunk, remaining > far) for chunk in first], root=0)
    logger = logging.getLogger(__name__)
    debug = logger.isEnabledFor(logging.DEBUG)   # once: the loop below runs per request
    if debug:
        logger.debug("scattered %d tasks to %d workers, %d left", handed, workers, remaining)
    idle = {w for w, chunk in enumerate(first) if w and not chunk}   # last answer was empty
    answered = workers
    expected = workers * max(1, policy.prefetch) + workers - len(idle)   # one more per chunk
    while answered < expected:
        world.poll(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
        worker = status.Get_source()
        if status.Get_tag() == protocol.RETRY:
            retries.failed(comm.recv(source=worker, tag=protocol.RETRY), worker)
            if debug:
                logger.debug("rank %d handed back failed tasks to retry", worker)
            expected += 1   # a worker asks once more for every RETRY it sends
            continue
        recv(message, worker, protocol.REQUEST)
        t0 = time.perf_counter()
        policy.observe(req[protocol.DONE], req[protocol.BUSY])
        stop.observe(req[protocol.DONE], req[protocol.FAILED], req[protocol.BUSY])
        if req[protocol.HALT]:
            stop.halt(f"rank {worker} had to stop (its journal cannot be written)")
        chunk = []
        if not stop.before_task(clock()):
            k = policy.chunk_size(remaining, workers)
            alone = not remaining and len(idle - {worker}) == workers - 1
            chunk = retries.take(worker, k, alone) if retries.queue else []
            fresh = list(islice(tasks, k - len(chunk)))
            remaining -= len(fresh)
            chunk += fresh
        send((chunk, remaining > far), worker, protocol.WORK)
        if debug:
            logger.debug("rank %d asked: sent %d tasks (%d left, ask ahead %s)", worker,
                         len(chunk), remaining, remaining > far)
        answered += 1
        handed += len(chunk)
        if progress:
            progress.update(stop.done, stop.failed, min(handed - stop.done, workers))
        if chunk:
            expected += 1   # the worker will ask once more for every chunk it gets
            idle.discard(worker)
        else:
            idle.add(worker)
        policy.observe_service(time.perf_counter() - t0)
    return retries.outcome()


def run_worker(world: World, log: TaskLog, invoke: Callable[[Any], Any], policy: Dynamic, stop: Stop,
         retry: bool) -> None:
    """A worker: take its first chunk from the master's scatter and ask max(1, prefetch) - 1
    more times up front, then once per chunk, before running it (asking ahead) or after; hand
    failed tasks back when retrying; stop when every request got its answer."""
    comm, depth = world.comm, policy.prefetch
    req, again = protocol.request_buffer(), protocol.request_buffer()
    message = [req, MPI.DOUBLE]
    chunk, far = comm.scatter(None, root=0)
    pending = max(1, depth) - 1
    for _ in range(pending):
        comm.Send(message, 0, protocol.REQUEST)
    last = 0.0
    while True:
        if chunk:
            # Ask ahead for short chunks (the round trip would show) and, for long ones, while
            # much work is left (rounds of equal tasks, as longest-first makes, otherwise end
            # together and queue at the master). With retries a worker never asks ahead: each
            # running chunk must still owe the master a request, or the master could hand out
            # its last work, finish, and miss the RETRY.
            ahead = depth > 0 and (far or last < policy.prefetch_below) and not retry
            if ahead:
                comm.Send(message, 0, protocol.REQUEST)   # reports the previous chunk
            ran, failed, last = log.run(chunk, invoke, clock, stop)
            req[protocol.DONE], req[protocol.FAILED], req[protocol.BUSY] = ran, failed, last
            req[protocol.HALT] = again[protocol.HALT] = stop.halted
            if retry and failed:   # before the request this chunk owes, so the master sees it first
                comm.send([task for task, s in zip(chunk, log.status[-ran:]) if s in FAILED_STATES],
                          0, protocol.RETRY)
                comm.Send([again, MPI.DOUBLE], 0, protocol.REQUEST)   # the one more request it owes
                pending += 1
            if not ahead:
                comm.Send(message, 0, protocol.REQUEST)
            pending += 1
        if not pending:
            return
        world.poll(0, protocol.WORK)
        chunk, far = comm.recv(source=0, tag=protocol.WORK)
        pending -= 1
