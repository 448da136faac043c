"""mtcmpi.Executor: a concurrent.futures.Executor whose tasks run on the other ranks.

The Executor object is the user's front; a Dispatcher thread on rank 0 makes every MPI call.
It keeps PREFETCH batches in flight per worker; a batch is a guided share of what is queued (at
most MAX_BATCH), so a chunksize-1 map of 100k no-ops moves in a few hundred messages while ten
slow tasks still go out one per worker. Batching is transport, not semantics: a call sent
ahead stays pending (running() False, cancel() succeeds) until it is the next its worker runs;
a cancelled call that already travelled is skipped by its worker (rank 0 sends its id). map()
needs no Future per call: its calls settle into one MapResults that its generator reads.
"""
from __future__ import annotations

import atexit
import concurrent.futures as cf
import logging
import threading
import time
import weakref
from collections import deque
from functools import partial
from itertools import count
from typing import Any, Callable, Iterable, Iterator

from .. import graph
from .. import protocol as p
from ..errors import RemoteTraceback, rebuilt
from .calls import (DUMPS, Held, call, call_chunk, call_encoded, chunked, decoded, failure,
                    loaded_with_inputs, pickled_call)
from .mapping import MapResults, Slot

try:
    from mpi4py import MPI

    from ..world import World
    from .dispatch import Dispatch, fail
except ImportError:   # no mpi4py: only parallel_map's sequential loop is available
    MPI = None

logger = logging.getLogger(__name__)
PENDING_OR_RUNNING = (cf._base.PENDING, cf._base.RUNNING)
numbers = count()     # every Executor of this process has its own number (stale replies say so)
live: dict[int, "Dispatcher"] = {}   # communicator handle -> the dispatcher that drives it


def intracomm(comm: "MPI.Comm | None") -> "MPI.Comm":
    """comm (COMM_WORLD if None), or ValueError if the Executor cannot use it."""
    comm = MPI.COMM_WORLD if comm is None else comm
    if comm == MPI.COMM_NULL:
        raise ValueError("mtcmpi.Executor needs a communicator, not MPI.COMM_NULL")
    if comm.Is_inter():
        raise ValueError("mtcmpi.Executor needs an intra-communicator: an inter-communicator's "
                         "two groups have no rank 0 to drive both (merge it first: comm.Merge())")
    return comm


class Executor(cf.Executor):
    """A concurrent.futures.Executor whose tasks run on the other ranks of comm.

    Create it on rank 0 while every other rank of comm serves (as under `mtcmpi exec` or in
    `with mtcmpi.executor()`); on one rank, tasks run in a thread of this process. As in
    mpi4py.futures: at most `max_workers` ranks are used; `initializer(*initargs)` runs once
    per worker (if it fails the Executor is broken, as the standard pools are). isolate=True
    runs each worker's tasks in a forked child, so a task that crashes its process (a
    segfault, os._exit, the OOM killer) fails its own future only, with TaskCrashed.
    """

    def __init__(self, comm: "MPI.Comm | None" = None, max_workers: int | None = None,
                 initializer: Callable | None = None, initargs: tuple = (), *, isolate: bool = False):
        if MPI is None:
            raise RuntimeError("mtcmpi.Executor needs mpi4py")
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        world = World.of(intracomm(comm))
        if world.rank != 0:
            raise RuntimeError(
                f"mtcmpi.Executor is created on rank 0 of its communicator, not rank {world.rank}: "
                "the other ranks serve tasks (run the driver with `python -m mtcmpi exec script.py`, "
                "keeping its driver code under `if __name__ == '__main__':`, or use `with "
                "mtcmpi.executor() as ex:` on every rank)")
        key = world.comm.py2f()
        if (previous := live.get(key)) is not None:
            if not previous.closed:
                raise RuntimeError("an mtcmpi.Executor is already running on this communicator; "
                                   "shut it down first (or use that one)")
            previous.thread.join()   # shut down but still finishing: its workers come next
        workers = list(range(1, world.size))[:max_workers]
        self._dispatcher = Dispatcher(world, workers, initializer, initargs, isolate)
        # held by the dispatcher, so the callback runs when this Executor is collected
        self._dispatcher.owner = weakref.ref(self, self._dispatcher.collected)
        live[key] = self._dispatcher
        self._dispatcher.thread.start()

    @property
    def num_workers(self) -> int:
        """How many workers run tasks: ranks used (at most max_workers), or 1 on one rank."""
        return max(1, len(self._dispatcher.workers))

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        """Schedule fn(*args, **kwargs) on a worker rank; returns its Future at once. A Future
        among the arguments makes the call wait for it (graph.py: dataflow)."""
        if graph.in_call(args, kwargs): return graph.submit(self, fn, args, kwargs)  # noqa: E701
        payload = pickled_call(fn, args, kwargs)
        d = self._dispatcher
        future = d.future_class()
        with d.wake:
            d.refuse_if_closed()
            d.queue.append((future, payload, ()))
            d.wake.notify()
        return future

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1, unordered: bool = False) -> Iterator:
        """Results of fn over the iterables, as a generator (submits everything now).

        As Executor.map documents: in order, timeout counting from this call, the first failing
        call's exception raised when its turn comes, and closing the generator early cancels
        what has not started. unordered=True yields results as they come (mpi4py.futures').
        chunksize > 1 makes one task of each chunksize calls, which lowers the per-call cost
        on rank 0; messages are batched either way.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if graph.holds_future(iterables := graph.listed(iterables)): return graph.map_calls(self, fn, iterables, timeout)  # noqa: E701,E501
        return self.starmap(fn, zip(*iterables), timeout=timeout, chunksize=chunksize,
                            unordered=unordered)

    def starmap(self, fn: Callable, iterable: Iterable[tuple], timeout: float | None = None,
                chunksize: int = 1, unordered: bool = False) -> Iterator:
        """map() with each item of iterable the arguments of one call: fn(*args)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if chunksize == 1:
            return self._map(fn, iter(iterable), timeout, unordered)
        chunks = ((c,) for c in chunked(iter(iterable), chunksize))
        return flattened(self._map(partial(call_chunk, fn), chunks, timeout, unordered))

    def _map(self, fn: Callable, calls: Iterable[tuple], timeout: float | None,
             unordered: bool) -> Iterator:
        """Queue fn(*args) for every args with one lock and one wake-up, each in a Slot of one
        MapResults instead of a Future: a Future (two locks, a condition) cost rank 0 more than
        the rest of the dispatch, 55k tasks/s against 100k+ for the engine's own path."""
        end = None if timeout is None else time.monotonic() + timeout
        payloads = [pickled_call(fn, args, {}) for args in calls]
        d = self._dispatcher
        results = MapResults(len(payloads), unordered, d.note_cancel)
        with d.wake:
            d.refuse_if_closed()
            d.queue.extend((Slot(results, i), payload, None) for i, payload in enumerate(payloads))
            d.wake.notify()
        return results.read(end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; cancel those not started if asked; wait for the rest if asked."""
        graph.drain(self, cancel_futures)   # calls waiting for inputs are submitted (or cancelled) first
        self._dispatcher.close(cancel_futures)
        if wait:
            self._dispatcher.thread.join()


def flattened(chunks: Iterator[list]) -> Iterator:
    """The items of each list in turn, holding none of them once yielded (CPython issue 14406)."""
    for chunk in chunks:
        chunk.reverse()
        while chunk:
            yield chunk.pop()


class Dispatcher:
    """Rank 0's thread for one Executor: sends the queued calls, settles their results.

    It holds no reference to its Executor: when the Executor is collected without a shutdown,
    collected() shuts it down as shutdown(wait=False) does (as concurrent.futures.thread does).
    """

    def __init__(self, world: World, workers: list[int], initializer: Callable | None,
                 initargs: tuple, isolate: bool):
        self.world, self.workers = world, workers
        self.number = next(numbers)
        self.init = (initializer, initargs, isolate)
        if initializer is not None:   # checked now, rather than fail on every worker alike
            pickled_call(initializer, initargs, {})
        self.start_order = DUMPS((p.START, self.number, initializer, initargs, isolate))
        self.owner: weakref.ref | None = None   # the Executor, weakly
        # (entry, pickled call, inputs): inputs None for a map()'s call (its result travels
        # back), () for a submit (its result may be kept by its worker), the input futures of
        # a dataflow call (graph.py); calls with a preferred worker wait in local[worker]
        self.queue: deque[tuple[Any, bytes, Any]] = deque()
        self.local: dict[int, deque] = {w: deque() for w in workers}
        self.gone: set[int] = set()   # workers that broke: no call waits for them
        self.n_local = 0
        self.released: deque[tuple[int, int]] = deque()   # (worker, task id) of dropped Futures
        self.dispatch: "Dispatch | None" = None
        self.wake = threading.Condition(threading.RLock())   # RLock: collected() may run anywhere
        self.closed = False
        self.broken: cf.BrokenExecutor | None = None
        self.cancels = False       # a call was cancelled: tell the workers holding it
        self.cancelled_any = False   # some call was cancelled, ever: take() looks at each
        self.cancel_all = False    # shutdown(cancel_futures=True): cancel what has not started
        self.settled = threading.Condition(threading.RLock())   # every TaskFuture's
        self.future_class = type("Future", (TaskFuture,), {"dispatcher": self,
                                                           "__module__": cf.Future.__module__})
        self.thread = threading.Thread(target=self.guarded, daemon=True, name="mtcmpi-executor")

    # -- called from the user's threads --

    def refuse_if_closed(self) -> None:
        """Raise as the standard pools do if no call may be queued (under self.wake)."""
        if self.broken is not None:
            raise cf.BrokenExecutor(f"{self.broken} (it takes no new calls)") from self.broken
        if self.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def close(self, cancel_futures: bool = False) -> None:
        """No new calls; with cancel_futures, cancel the queued ones and those not started."""
        with self.wake:
            self.closed = True
            if cancel_futures:
                self.cancel_all = self.cancelled_any = True
                for entry, _, _ in self.unqueued():
                    entry.cancel()
                    entry.set_running_or_notify_cancel()
            self.wake.notify()

    def unqueued(self) -> list[tuple[Any, bytes, Any]]:
        """Every queued call, taken out of the queues (under self.wake)."""
        items = [*self.queue, *(item for local in self.local.values() for item in local)]
        self.queue.clear()
        for local in self.local.values():
            local.clear()
        self.n_local = 0
        return items

    def queue_dependent(self, future: cf.Future, payload: bytes, inputs: list[cf.Future],
                        prefer: int | None) -> None:
        """Queue a dataflow call whose inputs are done (graph.py), for worker `prefer` first."""
        with self.wake:
            if future.cancelled() or not future.waits:   # cancelled, or sent behind its inputs
                return
            try:
                self.refuse_if_closed()
            except BaseException as exc:
                future.set_exception(exc)
                return
            future.waits = False
            if prefer is None or prefer in self.gone:
                self.queue.append((future, payload, inputs))
            else:
                self.local[prefer].append((future, payload, inputs))
                self.n_local += 1
            self.wake.notify()

    def collected(self, _ref: weakref.ref) -> None:
        """The Executor was garbage-collected without shutdown(): shut down, letting queued
        calls finish."""
        self.close()

    def note_cancel(self) -> None:
        with self.wake:
            self.cancels = self.cancelled_any = True
            self.wake.notify()

    # -- the thread --

    def guarded(self) -> None:
        """Run the dispatch; if it fails, every future it holds fails with BrokenExecutor and
        so does every submit() after."""
        key = self.world.comm.py2f()
        try:
            if self.workers:
                self.dispatch = Dispatch(self)
                self.dispatch.run()
            else:
                self.run_locally()
        except BaseException as exc:   # noqa: BLE001 - mtcmpi's own failure: break, never hang
            self.failed(exc)
        finally:
            if live.get(key) is self:
                del live[key]

    def failed(self, exc: BaseException, held: Iterable = ()) -> None:
        """The dispatch failed (mtcmpi's own error): fail every call, refuse new ones."""
        logger.error("mtcmpi.Executor's dispatcher failed", exc_info=exc)
        self.break_all(cf.BrokenExecutor(f"mtcmpi.Executor's dispatcher failed: {exc!r}"), held)

    def break_all(self, error: cf.BrokenExecutor, held: Iterable = ()) -> None:
        """Fail the queued calls and those held (sent to workers) with error; refuse new ones."""
        with self.wake:
            self.broken = error
            self.closed = True
            queued = [entry for entry, _, _ in self.unqueued()]
        for entry in [*queued, *held]:
            fail(entry, error)

    def has_work(self) -> bool:
        return bool(self.queue) or self.n_local > 0

    def take(self, worker: int, limit: int) -> list[tuple[Any, bytes, Any]]:
        """Up to limit queued calls for worker: those that prefer it, then any, then those
        that prefer another (busy) worker; cancelled ones are dropped (and notified)."""
        batch = []
        with self.wake:
            local = self.local[worker]
            queues = [local, self.queue]
            if not self.queue and self.n_local > len(local):
                queues += [q for w, q in self.local.items() if q and w != worker]
            for queue in queues:
                before = len(queue)
                if not self.cancelled_any:   # no call was ever cancelled: none to look at
                    for _ in range(min(limit - len(batch), len(queue))):
                        batch.append(queue.popleft())
                else:
                    while queue and len(batch) < limit:
                        item = queue.popleft()
                        if item[0].cancelled():
                            item[0].set_running_or_notify_cancel()
                        else:
                            batch.append(item)
                if queue is not self.queue:
                    self.n_local -= before - len(queue)
                if len(batch) >= limit:
                    break
        return batch

    def lost(self, worker: int) -> None:
        """worker cannot serve: the calls that preferred it may go anywhere."""
        with self.wake:
            self.gone.add(worker)
            self.queue.extend(self.local[worker])
            self.n_local -= len(self.local[worker])
            self.local[worker].clear()

    def run_locally(self) -> None:
        """One rank: run the calls in this thread, in order, each as it comes."""
        initializer, initargs, isolate = self.init
        head = f"failed on rank 0, host {self.world.host}, pid {self.world.pid}:\n"
        try:
            if initializer is not None:
                initializer(*initargs)
        except BaseException as exc:
            described = failure(exc, "the initializer " + head)[0]   # as a worker's would read
            error = cf.BrokenExecutor(f"mtcmpi.Executor: its initializer failed: {described.type}: "
                                      f"{described.message}")
            error.__cause__ = RemoteTraceback(described.traceback)
            return self.break_all(error)
        isolated = None
        if isolate:
            from ..isolate import Isolated   # imported only when asked: it loads ctypes, faults
            isolated = Isolated(call_encoded)
        tids = count()
        try:
            while True:
                with self.wake:
                    while not self.queue and not self.closed:
                        self.wake.wait()
                    if not self.queue:
                        return
                    entry, payload, inputs = self.queue.popleft()
                if not entry.set_running_or_notify_cancel():
                    continue
                tid = next(tids)
                try:
                    if inputs:   # a dataflow call: its inputs' values are here
                        fn, args, kwargs = loaded_with_inputs(payload, [f.result() for f in inputs])
                        if isolated is None:
                            ok, value = True, fn(*args, **kwargs)
                        else:
                            ok, value = decoded(*isolated(DUMPS((fn, args, kwargs))))
                    elif isolated is not None:
                        ok, value = decoded(*isolated(payload))
                    else:
                        ok, value = True, call(payload)
                except BaseException as exc:   # the call's, whatever it is: fails its future only
                    ok, value = False, rebuilt(*failure(exc, f"task {tid} {head}"))
                entry.set_result(value) if ok else entry.set_exception(value)
                del entry, value, inputs
        finally:
            if isolated is not None:
                isolated.close()


class TaskFuture(cf.Future):
    """The Future of a submit(): cancel() also tells the dispatcher (which tells the worker
    holding the call), and result() decodes rank 0's copy of a value its worker kept (futures/calls.py Held)."""

    dispatcher: Dispatcher        # set on each Dispatcher's subclass
    waits = False                 # True while a dataflow call waits for its inputs (graph.py)
    DONE = (cf._base.CANCELLED, cf._base.CANCELLED_AND_NOTIFIED, cf._base.FINISHED)

    def __init__(self) -> None:
        """cf.Future's state, with the Executor's one Condition instead of a new one per Future
        (a Condition costs 2 us to make: a tenth of a dataflow task's budget on rank 0).
        result() and exception() therefore wait in a loop until their own Future is done."""
        self._condition = self.dispatcher.settled
        self._state = cf._base.PENDING
        self._result = self._exception = None
        self._waiters: list = []
        self._done_callbacks: list = []

    def finish(self, value: Any) -> bool:
        """set_running_or_notify_cancel() and set_result(value) in one step, if the Future is
        pending or running (the dispatcher's path for most results); False if it is not."""
        with self._condition:
            if self._state not in PENDING_OR_RUNNING:
                return False
            self._result, self._state = value, cf._base.FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            if self._condition._waiters:
                self._condition.notify_all()
        if self._done_callbacks:
            self._invoke_callbacks()
        return True

    def wait_done(self, timeout: float | None) -> None:
        if self._state not in self.DONE:
            with self._condition:
                self._condition.wait_for(lambda: self._state in self.DONE, timeout)
    at: tuple[int, int] | None = None   # (worker, task id) once sent
    ahead: list | None = None     # (future, payload, inputs) of small dataflow calls waiting for it

    def cancel(self) -> bool:
        d = self.dispatcher
        with d.wake:
            if not cf.Future.cancel(self):
                return False
            waiting = self.waits
        if waiting:   # not queued: no one else will tell wait() and as_completed()
            self.set_running_or_notify_cancel()
        else:
            d.note_cancel()
        return True

    def result(self, timeout: float | None = None) -> Any:
        self.wait_done(timeout)
        value = cf.Future.result(self, 0)
        if type(value) is Held:
            ok, value = value.outcome()
            if not ok:
                raise value
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's exception, or the one its kept value raises on its way to rank 0 (it
        does not pickle, or does not unpickle here): result() would raise it."""
        self.wait_done(timeout)
        exc = cf.Future.exception(self, 0)
        if exc is None and type(self._result) is Held:
            ok, value = self._result.outcome()
            return None if ok else value
        return exc


@atexit.register
def finish_live_executors() -> None:
    """At exit, let Executors that were not shut down finish their calls (as the standard pools
    do) while MPI is still up: registered after mpi4py's finalizer, this runs before it."""
    for dispatcher in list(live.values()):
        dispatcher.close()
        dispatcher.thread.join()
