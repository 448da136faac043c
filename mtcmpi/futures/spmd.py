"""The ways into the Executor besides creating one: executor() for an SPMD program, map() for
a loop, and drive_workers() for `mtcmpi exec` (driver.py)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from .. import protocol as p
from ..errors import RemoteTraceback, describe, pickled_or_none, rebuilt
from . import worker
from .calls import pickled_call
from .pool import MPI, Executor, intracomm, live

served: set[int] = set()   # communicators whose other ranks serve Executors right now

if MPI is not None:
    from ..world import World


def distributing() -> bool:
    """Whether calls can go to other ranks at all: mpi4py is there, and this is not a task on
    a serving rank (whose own parallel calls run in order)."""
    return MPI is not None and not worker.in_worker


def workers_serve(comm: "MPI.Comm") -> bool:
    """Rank 0: whether the other ranks of comm serve already (under `mtcmpi exec`, or inside
    `with executor()`), so rank 0 alone can use an Executor there."""
    return comm.py2f() in served


@contextmanager
def executor_where_served(comm: "MPI.Comm") -> Iterator[Executor]:
    """Rank 0 of a comm whose workers serve: the Executor running there if there is one (left
    running after), else a new one for the block."""
    running = live.get(comm.py2f())
    ex = running.owner() if running is not None and not running.closed and running.owner else None
    if ex is not None:
        yield ex
        return
    with Executor(comm) as ex:
        yield ex


def stop_workers(comm: "MPI.Comm") -> None:
    """Rank 0: end work_for_executors() on every other rank of comm (its Executor has ended)."""
    for rank in range(1, comm.Get_size()):
        comm.send((p.STOP,), rank, p.ORDERS)


def finish_executor(comm: "MPI.Comm", cancel: bool) -> None:
    """Rank 0: shut down the Executor left running on comm, if any, and wait for it; with
    cancel, drop the calls not started."""
    if (dispatcher := live.get(comm.py2f())) is not None:
        dispatcher.close(cancel)
        dispatcher.thread.join()


def drive_workers(comm: "MPI.Comm", driver: Callable[[], int]) -> int:
    """Rank 0 of `mtcmpi exec`: run driver() while the other ranks serve, then end what it
    left running (dropping its queue if it failed) and stop the workers; its status."""
    key = comm.py2f()
    served.add(key)
    try:
        status = driver()
        finish_executor(comm, cancel=status != 0)
    finally:
        served.discard(key)
        stop_workers(comm)
    return status


@contextmanager
def executor(comm: "MPI.Comm | None" = None, **options: Any) -> Iterator[Executor | None]:
    """Collective: the Executor on rank 0 of comm, None on the other ranks, which serve while
    rank 0 is inside the block (like mpi4py.futures.MPICommExecutor). options go to Executor.

        with mtcmpi.executor() as ex:
            if ex is not None:
                results = list(ex.map(simulate, params))
    """
    if worker.in_worker:
        raise RuntimeError("mtcmpi.executor() cannot start inside a task on a serving rank")
    world = World.of(intracomm(comm))
    key = world.comm.py2f()
    if world.rank != 0:
        worker.work_for_executors(world.comm)
        yield None
        return
    if key in served:   # the driver of `mtcmpi exec`: the workers serve already, and go on
        with Executor(world.comm, **options) as ex:
            yield ex
        return
    served.add(key)
    try:
        with Executor(world.comm, **options) as ex:
            yield ex
    finally:
        served.discard(key)
        stop_workers(world.comm)


def parallel_map(fn: Callable, iterable: Iterable, comm: "MPI.Comm | None" = None) -> list:
    """[fn(x) for x in iterable], with the calls spread over the ranks of comm.

    Same results in the same order as the loop; if calls raise, the first failing item's
    exception is raised (with its remote traceback as __cause__). Sequential when mpi4py is
    missing, with one rank, or inside a task. On the driver of `mtcmpi exec` (or inside an
    executor() block on rank 0) it uses the Executor and only that rank calls it. Otherwise it
    is collective: every rank calls it with the same fn (only rank 0's iterable is read) and
    every rank gets the list, so an SPMD script goes on identically everywhere.
    """
    world = World.of(intracomm(comm)) if distributing() else None
    if world is None or world.size == 1:
        return [fn(x) for x in iterable]
    if workers_serve(world.comm):
        with executor_where_served(world.comm) as ex:
            return list(ex.map(fn, iterable))
    pickled_call(fn, (), {})   # an unpicklable fn fails alike on every rank, before any message
    with executor(world.comm) as ex:
        outcome = ex is not None and collect(ex, fn, iterable)
    ok, value = world.comm.bcast(outcome, root=0)
    if not ok:
        raise rebuilt(*value)
    return value


def collect(ex: Executor, fn: Callable, iterable: Iterable) -> tuple[bool, Any]:
    """(True, results), or (False, the first error as data) to broadcast."""
    try:
        return True, list(ex.map(fn, iterable))
    except Exception as exc:
        cause = exc.__cause__
        described = describe(exc)
        if isinstance(cause, RemoteTraceback):
            described = described._replace(traceback=str(cause))
        return False, (described, pickled_or_none(exc))
