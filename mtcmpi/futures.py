"""mtcmpi.Executor (concurrent.futures over MPI ranks), mtcmpi.executor() and mtcmpi.map.

Rank 0 of a communicator drives: submit() and map() return real concurrent.futures.Future
objects, so wait(), as_completed(), done() and result(timeout) behave as the standard library
documents. The other ranks serve: they run the tasks rank 0 sends until it tells them to stop.
Three ways to get there:

    mpirun -n N python -m mtcmpi exec driver.py ARGS   # run_script: rank 0 runs the script
    with mtcmpi.executor() as ex:                      # inside an SPMD program, on every rank:
        if ex is not None: ...                         # rank 0 drives, the others serve meanwhile
    mtcmpi.map(fn, items)                              # a loop of pure calls, made parallel

Functions and arguments travel by pickle, checked at submit(), so a lambda fails there with its
name rather than later on a worker. A task's exception is re-raised by result() as the original
type when it unpickles, with __cause__ a RemoteTraceback headed with the task's rank, host and pid.
With one rank the tasks run in a thread of the calling process, from the same pickled calls
(results are passed back as they are, not pickled).

Transport (the throughput is in the batching, not the futures): one dispatcher thread on rank 0
makes every MPI call. It keeps PREFETCH batches in flight per worker; a batch is a guided share
of whatever is queued (at most MAX_BATCH), so a chunksize-1 map of 100k no-ops moves in a few
hundred messages while ten slow tasks still go out one per worker. Every submit() keeps its own
Future; batching is transport, not semantics. map() needs no Future per call: its calls settle
into one MapResults that its generator reads in order, which quadruples its throughput.
"""
from __future__ import annotations

import atexit
import pickle
import threading
import time
import traceback
from collections import deque
from concurrent.futures import BrokenExecutor, CancelledError, Future
from concurrent.futures import Executor as StandardExecutor
from contextlib import contextmanager
from functools import partial
from itertools import count, islice
from typing import Any, Callable, Iterable, Iterator

from . import graph
from .tasklog import Failure, TaskLog

try:
    from mpi4py import MPI

    from .errors import EXIT_INTERNAL
    from .policies import Guided
    from .world import World
except ImportError:   # no mpi4py: map() still runs, sequentially
    MPI = None

# Tags (protocol.py's engine uses 1 and 2). Rank 0 sends TASKS, a pickled list of (task id,
# pickled call), an empty list meaning stop; a worker answers each with RESULTS, the pickled
# list of (ok, value) in the same order, matched to its batch by order (MPI keeps the messages
# of a pair of ranks in order), so results need no ids.
TASKS, RESULTS = 11, 12
PREFETCH = 2          # batches in flight per worker: one running, one waiting behind it
MAX_BATCH = 256       # tasks per message at most
DRIVER_PAUSE = 1e-3   # longest nap of rank 0 between polls for results (s)
WORKER_PAUSE = 1e-2   # longest sleep of an idle worker between polls (s): 0.7% of a core
MAIN_ALIAS = "__mp_main__"   # the driver script's module on the workers, as multiprocessing names it
DUMPS = partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)

_live: dict[int, "Executor"] = {}     # communicator handle -> its running Executor (one at a time)
_served: set[int] = set()             # communicators whose other ranks are serving right now
_in_worker = False                    # True while this rank serves: a task's own map runs serially


class RemoteTraceback(Exception):
    """The traceback of a task that failed on another rank: __cause__ of the re-raised error."""

    def __str__(self) -> str:
        return self.args[0]


class RemoteError(Exception):
    """Stands in for a task's exception that could not travel back (it did not (un)pickle)."""


# ---- the worker side -------------------------------------------------------------------------

def serve(comm: MPI.Comm | None = None) -> None:
    """Run the batches rank 0 of comm sends until it says stop (every rank but 0 calls this)."""
    global _in_worker
    world = World.of(comm)
    log = TaskLog(world.rank, world.host, world.pid)   # only for its failure formatting
    _in_worker = True
    try:
        while batch := poll(lambda: world.comm.improbe(0, TASKS)).recv():
            data = pack_results(run_batch(batch, log), batch, log)
            world.comm.Send([data, MPI.BYTE], 0, RESULTS)
    finally:
        _in_worker = False


def poll(probe: Callable[[], Any]) -> Any:
    """Call probe until it returns something, sleeping 10 us doubling to WORKER_PAUSE between.

    A blocking receive would answer a little sooner, but Open MPI busy-waits in it unless
    oversubscribed, so every idle worker would burn a core while the driver works alone (with
    a 1 ms cap an idle worker still used 5% of a core; 10 ms costs at most that much latency
    after idling, and none in a stream of tasks, where the next batch is already waiting).
    """
    pause = 1e-5
    while (found := probe()) is None:
        time.sleep(pause)
        pause = min(2 * pause, WORKER_PAUSE)
    return found


def run_batch(batch: list[tuple[int, bytes]], log: TaskLog) -> list[tuple[bool, Any]]:
    """Run pickled calls; each gives (True, value) or (False, (Failure, pickled exception))."""
    out = []
    for tid, payload in batch:
        try:
            fn, args, kwargs = pickle.loads(payload)
            out.append((True, fn(*args, **kwargs)))
        except (Exception, SystemExit) as exc:   # as TaskLog.run: a task's exit ends the task only
            out.append((False, failure(log, tid, exc)))
    return out


def failure(log: TaskLog, tid: int, exc: BaseException) -> tuple[Failure, bytes | None]:
    """An exception as data: its text and rank/host-headed traceback, and itself if it pickles."""
    return log.failure(tid, exc), pickled_or_none(exc)


def pickled_or_none(exc: BaseException) -> bytes | None:
    """The exception pickled, or None if it does not pickle (it then travels as text only)."""
    try:
        return DUMPS(exc)
    except Exception:
        return None


def pack_results(results: list[tuple[bool, Any]], batch: list, log: TaskLog) -> bytes:
    """Pickle a batch's results; a result that does not pickle fails its own task only."""
    try:
        return DUMPS(results)
    except Exception:
        return DUMPS([sendable(r, tid, log) for r, (tid, _) in zip(results, batch)])


def sendable(result: tuple[bool, Any], tid: int, log: TaskLog) -> tuple[bool, Any]:
    """The result itself if it pickles, else a failure of its task saying so."""
    try:
        DUMPS(result)
        return result
    except Exception as exc:
        problem = pickle.PicklingError(f"the result of task {tid} (a {type(result[1]).__name__}) "
                                       f"cannot be sent back to rank 0: {exc}")
        return False, failure(log, tid, problem)


def rebuild(found: Failure, blob: bytes | None) -> BaseException:
    """The exception to raise for a failed task: the original type if it unpickles, else
    RemoteError; either way with the remote traceback as __cause__."""
    try:
        exc = pickle.loads(blob) if blob is not None else None
    except Exception:
        exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(f"{found.type}: {found.message}")
    exc.__cause__ = RemoteTraceback(found.traceback)
    return exc


# ---- the driver side -------------------------------------------------------------------------

def pickled_call(fn: Callable, args: tuple, kwargs: dict) -> bytes:
    """fn(*args, **kwargs) as bytes, or a PicklingError that names what does not pickle."""
    try:
        return DUMPS((fn, args, kwargs))
    except Exception as exc:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        try:
            DUMPS(fn)
        except Exception:
            raise pickle.PicklingError(
                f"cannot send function {name!r} to other ranks: it does not pickle ({exc}). "
                "Functions travel by reference: define it at module level (lambdas, closures "
                "and nested functions do not pickle)") from exc
        raise pickle.PicklingError(f"cannot send the arguments of a call of {name!r} to other "
                                   f"ranks: they do not pickle ({exc})") from exc


class Executor(StandardExecutor):
    """A concurrent.futures.Executor whose tasks run on the other ranks of comm.

    Create it on rank 0 while every other rank of comm is in serve() (as under `mtcmpi exec` or
    in `with mtcmpi.executor()`). One Executor per communicator runs at a time. shutdown() ends
    this Executor, not the serving ranks; with one rank, tasks run in a thread of this process.
    """

    def __init__(self, comm: MPI.Comm | None = None):
        if MPI is None:
            raise RuntimeError("mtcmpi.Executor needs mpi4py")
        world = World.of(comm)
        if world.rank != 0:
            raise RuntimeError(
                f"mtcmpi.Executor is created on rank 0 of its communicator, not rank {world.rank}: "
                "the other ranks serve tasks (run the driver with `python -m mtcmpi exec script.py`, "
                "keeping its driver code under `if __name__ == '__main__':`, or use `with "
                "mtcmpi.executor() as ex:` on every rank)")
        key = world.comm.py2f()
        if key in _live:
            raise RuntimeError("an mtcmpi.Executor is already running on this communicator; "
                               "shut it down first (or use that one)")
        _live[key] = self
        self._world, self._key = world, key
        self._queue: deque[tuple[Future, bytes]] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._closed = False
        self._tids = count()
        # per worker, its batches in the order sent: (the send's request, the batch's futures)
        self._in_flight: dict[int, deque[tuple[MPI.Request, list[Future]]]] = {
            w: deque() for w in range(1, world.size)}
        loop = self._run_locally if world.size == 1 else self._dispatch
        self._thread = threading.Thread(target=self._guard, args=(loop,), daemon=True,
                                        name="mtcmpi-executor")
        self._thread.start()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Schedule fn(*args, **kwargs) on a worker rank; returns its Future at once."""
        if graph.in_call(args, kwargs): return graph.submit(self, fn, args, kwargs)  # noqa: E701
        payload = pickled_call(fn, args, kwargs)
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.append((future, payload))
            self._wake.notify()
        return future

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Results of fn over the iterables, in order, as a generator (submits everything now).

        As Executor.map documents: timeout counts from this call, the first failing call's
        exception is raised when its turn comes, and closing the generator early cancels what
        has not started. chunksize > 1 makes one task of each chunksize calls, which lowers the
        per-call cost on rank 0; messages are batched either way.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if graph.holds_future(iterables := graph.listed(iterables)): return graph.map_calls(self, fn, iterables, timeout)  # noqa: E701
        if chunksize == 1:
            return self._map(fn, zip(*iterables), timeout)
        results = self._map(partial(call_chunk, fn), ((c,) for c in chunked(zip(*iterables), chunksize)),
                            timeout)
        return (value for chunk in results for value in chunk)

    def _map(self, fn: Callable, calls: Iterable[tuple], timeout: float | None) -> Iterator:
        """Queue fn(*args) for every args with one lock and one wake-up, each in a Slot of one
        MapResults instead of a Future: a Future (two locks, a condition) cost rank 0 more than
        the rest of the dispatch, 55k tasks/s against 100k+ for the engine's own path."""
        end = None if timeout is None else time.monotonic() + timeout
        payloads = [pickled_call(fn, args, {}) for args in calls]
        results = MapResults(len(payloads))
        with self._wake:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.extend((Slot(results, i), payload) for i, payload in enumerate(payloads))
            self._wake.notify()
        return results.in_order(end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; cancel the queued ones if asked; wait for the rest if asked."""
        graph.drain(self, cancel_futures)   # calls waiting for inputs are submitted (or cancelled) first
        with self._wake:
            self._closed = True
            while cancel_futures and self._queue:
                self._queue.popleft()[0].cancel()
            self._wake.notify()
        if wait:
            self._thread.join()

    # -- the dispatcher thread: every MPI call of rank 0 happens here --

    def _guard(self, loop: Callable[[], None]) -> None:
        """Run the loop; if it breaks, fail every future it holds and abort a multi-rank job
        (its workers' state is unknown, so a later Executor could not trust their messages)."""
        try:
            loop()
        except BaseException as exc:
            error = BrokenExecutor(f"mtcmpi.Executor's dispatcher failed: {exc!r}")
            with self._wake:
                self._closed = True
            for future in [f for sent in self._in_flight.values() for _, b in sent for f in b]:
                if not future.done():
                    future.set_exception(error)
            while self._queue:
                self._queue.popleft()[0].set_exception(error)
            if self._world.size > 1:
                self._world.abort(f"mtcmpi.Executor: internal error on rank 0, aborting the job:\n"
                                  f"{traceback.format_exc()}", EXIT_INTERNAL)
        finally:
            _live.pop(self._key, None)

    def _take(self, limit: int) -> list[tuple[Future, bytes]]:
        """Up to limit queued tasks, marked running; cancelled ones are dropped."""
        batch, queue = [], self._queue
        while queue and len(batch) < limit:
            future, payload = queue.popleft()
            if future.set_running_or_notify_cancel():
                batch.append((future, payload))
        return batch

    def _await_work(self) -> bool:
        """Sleep until something is queued (True) or shutdown leaves nothing to do (False)."""
        with self._wake:
            while not self._queue and not self._closed:
                self._wake.wait()
            return bool(self._queue)

    def _nap(self, pause: float, can_send: bool) -> float:
        """Sleep up to pause, or less if a submission comes that a free worker could take;
        returns the next pause (doubled, at most DRIVER_PAUSE)."""
        with self._wake:
            if not (can_send and self._queue):
                self._wake.wait(pause)
        return min(2 * pause, DRIVER_PAUSE)

    def _run_locally(self) -> None:
        log = TaskLog(self._world.rank, self._world.host, self._world.pid)
        while self._await_work():
            for future, payload in self._take(1):
                settle([future], run_batch([(next(self._tids), payload)], log))

    def _dispatch(self) -> None:
        """Keep PREFETCH batches at every worker while there is work; settle results as they come.

        How it waits (measured with 1 driver + 1 worker on 2 cores): with nothing in flight it
        sleeps on the condition submit() notifies, using no CPU. With batches in flight it polls
        Improbe, napping on that condition 10 us doubling to DRIVER_PAUSE between polls: a
        submission a free worker can take is sent at once, a result is seen within 1 ms, and
        waiting on long tasks costs rank 0 about 5% of a core. Blocking in MPI_Mprobe whenever
        every worker is full gave the same throughput (50-60k no-op tasks/s) but Open MPI spins
        in it unless oversubscribed: a whole core for as long as the tasks run.
        """
        workers = self._world.size - 1
        free = deque(w for _ in range(PREFETCH) for w in range(1, workers + 1))
        share = Guided(k=PREFETCH)
        status, pause = MPI.Status(), 1e-5
        while True:
            while free and self._queue:
                self._send(free, min(MAX_BATCH, share.chunk_size(len(self._queue), workers)))
            if len(free) == PREFETCH * workers:
                if not self._await_work():
                    return
            elif self._receive(status, free):
                pause = 1e-5
            else:
                pause = self._nap(pause, bool(free))

    def _send(self, free: deque[int], size: int) -> None:
        """Send up to size queued tasks to the first free worker."""
        batch = self._take(size)
        if batch:
            worker = free.popleft()
            tasks = [(next(self._tids), payload) for _, payload in batch]
            # isend: a blocking send of a large batch could wait for the worker while the
            # worker waits in its own send of results for us
            self._in_flight[worker].append((self._world.comm.isend(tasks, worker, TASKS),
                                            [future for future, _ in batch]))

    def _receive(self, status: MPI.Status, free: deque[int]) -> bool:
        """Settle one batch of results if one has come; False if none had."""
        message = self._world.comm.improbe(MPI.ANY_SOURCE, RESULTS, status)
        if message is None:
            return False
        worker = status.Get_source()
        data = bytearray(status.Get_count(MPI.BYTE))
        message.Recv([data, MPI.BYTE])
        free.append(worker)
        request, futures = self._in_flight[worker].popleft()
        request.wait()   # complete: the worker has answered this batch
        settle(futures, data)
        return True


class MapResults:
    """The outcomes of one map() call, filled in by the dispatcher and read in order."""

    def __init__(self, n: int):
        self.outcomes: list[tuple[bool, Any] | None] = [None] * n
        self.cond = threading.Condition(threading.Lock())
        self.next = 0              # the index the reader waits for
        self.cancelled = False     # the reader stopped early: drop what has not started

    def settle(self, index: int, ok: bool, value: Any) -> None:
        with self.cond:
            self.outcomes[index] = (ok, value)
            if index == self.next:
                self.cond.notify()

    def in_order(self, end: float | None) -> Iterator:
        """Each value in turn, raising a failed call's exception (TimeoutError past end)."""
        try:
            for i in range(len(self.outcomes)):
                with self.cond:
                    self.next = i
                    while self.outcomes[i] is None:
                        left = None if end is None else end - time.monotonic()
                        if left is not None and left <= 0:
                            raise TimeoutError()
                        self.cond.wait(left)
                ok, value = self.outcomes[i]
                self.outcomes[i] = None   # let a long map's results go as they are read
                if not ok:
                    raise value
                yield value
        finally:
            self.cancelled = True


class Slot:
    """One call of a map: the few Future methods the dispatcher uses, settling into MapResults."""

    __slots__ = ("results", "index")

    def __init__(self, results: MapResults, index: int):
        self.results, self.index = results, index

    def set_running_or_notify_cancel(self) -> bool:
        return not self.results.cancelled

    def set_result(self, value: Any) -> None:
        self.results.settle(self.index, True, value)

    def set_exception(self, exc: BaseException) -> None:
        self.results.settle(self.index, False, exc)

    def cancel(self) -> bool:
        self.results.settle(self.index, False, CancelledError())
        return True

    def done(self) -> bool:
        return self.results.outcomes[self.index] is not None


def settle(futures: list[Future], results: list[tuple[bool, Any]] | bytearray) -> None:
    """Give each future its result or exception (results pickled or not)."""
    if not isinstance(results, list):
        try:
            results = pickle.loads(results)
        except Exception as exc:   # e.g. a result's class is not importable on rank 0
            error = RemoteError(f"the results of a batch of {len(futures)} tasks do not unpickle "
                                f"on rank 0: {type(exc).__name__}: {exc}")
            for future in futures:
                future.set_exception(error)
            return
    for future, (ok, value) in zip(futures, results):
        if ok:
            future.set_result(value)
        else:
            future.set_exception(rebuild(*value))


def call_chunk(fn: Callable, chunk: list[tuple]) -> list:
    """One task of a chunked map: fn over a list of argument tuples."""
    return [fn(*args) for args in chunk]


def chunked(items: Iterator, size: int) -> Iterator[list]:
    """Lists of `size` consecutive items (the last may be shorter)."""
    while chunk := list(islice(items, size)):
        yield chunk


@atexit.register
def _finish_live_executors() -> None:
    """At exit, let running Executors finish their tasks (as ThreadPoolExecutor does) while MPI
    is still up: atexit runs this before mpi4py finalizes MPI."""
    for ex in list(_live.values()):
        ex.shutdown(wait=True)


def stop_workers(comm: MPI.Comm) -> None:
    """Rank 0: end serve() on every other rank of comm (no Executor may be running on it)."""
    for worker in range(1, comm.Get_size()):
        comm.send([], worker, TASKS)


# ---- the three ways in -----------------------------------------------------------------------

@contextmanager
def executor(comm: MPI.Comm | None = None) -> Iterator[Executor | None]:
    """Collective: the Executor on rank 0 of comm, None on the other ranks, which serve while
    rank 0 is inside the block (like mpi4py.futures.MPICommExecutor).

        with mtcmpi.executor() as ex:
            if ex is not None:
                results = list(ex.map(simulate, params))
    """
    if _in_worker:
        raise RuntimeError("mtcmpi.executor() cannot start inside a task on a serving rank")
    world = World.of(comm)
    key = world.comm.py2f()
    if world.rank != 0:
        serve(world.comm)
        yield None
        return
    if key in _served:   # the driver of `mtcmpi exec`: the workers serve already, and go on
        with Executor(world.comm) as ex:
            yield ex
        return
    _served.add(key)
    try:
        with Executor(world.comm) as ex:
            yield ex
    finally:
        _served.discard(key)
        stop_workers(world.comm)


def parallel_map(fn: Callable, iterable: Iterable, comm: MPI.Comm | None = None) -> list:
    """[fn(x) for x in iterable], with the calls spread over the ranks of comm.

    Same results in the same order as the loop; if calls raise, the first failing item's
    exception is raised (with its remote traceback as __cause__). Sequential when mpi4py is
    missing, with one rank, or inside a task. On the driver of `mtcmpi exec` (or inside an
    executor() block on rank 0) it uses the Executor and only that rank calls it. Otherwise it
    is collective: every rank calls it with the same fn (only rank 0's iterable is read) and
    every rank gets the list, so an SPMD script goes on identically everywhere.
    """
    world = None if MPI is None or _in_worker else World.of(comm)
    if world is None or world.size == 1:
        return [fn(x) for x in iterable]
    key = world.comm.py2f()
    if key in _served:
        if key in _live:
            return list(_live[key].map(fn, iterable))
        with Executor(world.comm) as ex:
            return list(ex.map(fn, iterable))
    pickled_call(fn, (), {})   # an unpicklable fn fails alike on every rank, before any message
    with executor(world.comm) as ex:
        outcome = ex is not None and collect(ex, fn, iterable)
    ok, value = world.comm.bcast(outcome, root=0)
    if not ok:
        raise rebuild(*value)
    return value


def collect(ex: Executor, fn: Callable, iterable: Iterable) -> tuple[bool, Any]:
    """(True, results), or (False, the first error as data) to broadcast."""
    try:
        return True, list(ex.map(fn, iterable))
    except Exception as exc:
        cause = exc.__cause__
        text = str(cause) if isinstance(cause, RemoteTraceback) else traceback.format_exc()
        return False, (Failure(type(exc).__name__, str(exc), text), pickled_or_none(exc))
