"""The engine: run a task list over the ranks of a communicator under a policy.

Static policies run each rank's share with no messages. Self-scheduling (dynamic, guided) makes
rank 0 a master that only hands out chunks; the other ranks are workers that ask for the next
chunk before they run the current one (prefetch), so the round trip hides behind the work.
One rank runs everything in-process. Every path ends with this rank's TaskLog.
"""
from __future__ import annotations

import time
from itertools import islice
from typing import Any, Callable, Iterator, Sequence

from mpi4py import MPI

from . import protocol
from .faults import Stop
from .policies import Dynamic, Policy, Static
from .tasklog import TaskLog
from .tasks import Source, Task
from .world import World

clock = time.time  # epoch seconds: task records from different ranks share one time axis


def execute(world: World, invoke: Callable[[Any], Any], source: Source, ids: Sequence[int],
            policy: Policy, log: TaskLog, stop: Stop) -> None:
    """Run the tasks `ids` (ascending; all of range(n), or what a resumed run has left) of
    `source` on this rank's part of the world, recording into log, until stop says no more."""
    if world.size == 1:
        log.run(tasks_of(source, ids), invoke, clock, stop)
    elif isinstance(policy, Static):
        share = policy.share(world.rank, world.size, len(ids))
        log.run(tasks_of(source, ids[share.start:share.stop:share.step]), invoke, clock, stop)
    elif world.rank == 0:
        serve(world, tasks_of(source, ids), len(ids), policy, stop)
    else:
        work(world, log, invoke, policy, stop)


def tasks_of(source: Source, ids: Sequence[int]) -> Iterator[Task]:
    """The tasks with these ids; numpy ids become Python ints before they reach a task."""
    return source.take(ids if isinstance(ids, range) else map(int, ids))


def serve(world: World, tasks: Iterator[Task], n: int, policy: Dynamic, stop: Stop) -> None:
    """The master: answer every request with the next chunk, or an empty one when none is left
    or stop says no more."""
    comm, workers = world.comm, world.size - 1
    recv, send, source_of = comm.Recv, comm.send, MPI.Status.Get_source
    req, status = protocol.request_buffer(), MPI.Status()
    message = [req, MPI.DOUBLE]
    expected, answered, remaining = workers * max(1, policy.prefetch), 0, n
    while answered < expected:
        world.poll(MPI.ANY_SOURCE, protocol.REQUEST)
        recv(message, MPI.ANY_SOURCE, protocol.REQUEST, status)
        t0 = time.perf_counter()
        policy.observe(req[protocol.DONE], req[protocol.BUSY])
        stop.observe(req[protocol.DONE], req[protocol.FAILED], req[protocol.BUSY])
        chunk = [] if stop.before_task(clock()) else list(islice(tasks, policy.chunk_size(remaining, workers)))
        send(chunk, source_of(status), protocol.WORK)
        answered += 1
        if chunk:
            expected += 1   # the worker will ask once more for every chunk it gets
            remaining -= len(chunk)
        policy.observe_service(time.perf_counter() - t0)


def work(world: World, log: TaskLog, invoke: Callable[[Any], Any], policy: Dynamic, stop: Stop) -> None:
    """A worker: ask for max(1, prefetch) chunks, then once per chunk received, before running
    it (asking ahead) or after; run each chunk; stop when every request got its answer."""
    comm, depth = world.comm, policy.prefetch
    req = protocol.request_buffer()
    message = [req, MPI.DOUBLE]
    pending = max(1, depth)
    for _ in range(pending):
        comm.Send(message, 0, protocol.REQUEST)
    last = 0.0
    while pending:
        world.poll(0, protocol.WORK)
        chunk = comm.recv(source=0, tag=protocol.WORK)
        pending -= 1
        if not chunk:
            continue
        ahead = depth > 0 and last < policy.prefetch_below
        if ahead:
            comm.Send(message, 0, protocol.REQUEST)   # reports the previous chunk
        req[protocol.DONE], req[protocol.FAILED], req[protocol.BUSY] = log.run(chunk, invoke, clock, stop)
        last = req[protocol.BUSY]
        if not ahead:
            comm.Send(message, 0, protocol.REQUEST)
        pending += 1
