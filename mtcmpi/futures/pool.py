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

from .. import protocol as p
from ..errors import RemoteTraceback
from .calls import (DUMPS, call, call_chunk, call_encoded, chunked, decoded, failure, pickled_call,
                    rebuilt)

try:
    from mpi4py import MPI

    from ..policies import Guided
    from ..world import Backoff, World
except ImportError:   # no mpi4py: only parallel_map's sequential loop is available
    MPI = None

PREFETCH = 2          # batches in flight per worker: one running, one waiting behind it
MAX_BATCH = 256       # tasks per message at most
DRIVER_PAUSE = 1e-3   # longest nap of rank 0 between polls for results (s)
logger = logging.getLogger(__name__)
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
        """Schedule fn(*args, **kwargs) on a worker rank; returns its Future at once."""
        payload = pickled_call(fn, args, kwargs)
        d = self._dispatcher
        future = d.future_class()
        with d.wake:
            d.refuse_if_closed()
            d.queue.append((future, payload))
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
            d.queue.extend((Slot(results, i), payload) for i, payload in enumerate(payloads))
            d.wake.notify()
        return results.read(end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; cancel those not started if asked; wait for the rest if asked."""
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
        self.queue: deque[tuple[Any, bytes]] = deque()
        self.wake = threading.Condition(threading.RLock())   # RLock: collected() may run anywhere
        self.closed = False
        self.broken: cf.BrokenExecutor | None = None
        self.cancels = False       # a call was cancelled: tell the workers holding it
        self.cancelled_any = False   # some call was cancelled, ever: take() looks at each
        self.cancel_all = False    # shutdown(cancel_futures=True): cancel what has not started
        self.future_class = type("Future", (cf.Future,), {"cancel": cancel_and_tell(self.note_cancel),
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
                while self.queue:
                    entry = self.queue.popleft()[0]
                    entry.cancel()
                    entry.set_running_or_notify_cancel()
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
                Dispatch(self).run()
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
            queued = [entry for entry, _ in self.queue]
            self.queue.clear()
        for entry in [*queued, *held]:
            fail(entry, error)

    def take(self, limit: int) -> list[tuple[Any, bytes]]:
        """Up to limit queued calls; cancelled ones are dropped (and notified)."""
        batch, queue = [], self.queue
        with self.wake:
            if not self.cancelled_any:   # no call was ever cancelled: none to look at
                for _ in range(min(limit, len(queue))):
                    batch.append(queue.popleft())
                return batch
            while queue and len(batch) < limit:
                item = queue.popleft()
                if item[0].cancelled():
                    item[0].set_running_or_notify_cancel()
                else:
                    batch.append(item)
        return batch

    def run_locally(self) -> None:
        """One rank: run the calls in this thread, in order, each as it comes."""
        initializer, initargs, isolate = self.init
        head = f"failed on rank 0, host {self.world.host}, pid {self.world.pid}:\n"
        try:
            if initializer is not None:
                initializer(*initargs)
        except BaseException as exc:
            error = cf.BrokenExecutor("mtcmpi.Executor: its initializer failed")
            error.__cause__ = RemoteTraceback(failure(exc, "the initializer " + head)[0].traceback)
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
                    entry, payload = self.queue.popleft()
                if not entry.set_running_or_notify_cancel():
                    continue
                tid = next(tids)
                try:
                    if isolated is not None:
                        ok, value = decoded(*isolated(payload))
                    else:
                        ok, value = True, call(payload)
                except BaseException as exc:   # the call's, whatever it is: fails its future only
                    ok, value = False, rebuilt(*failure(exc, f"task {tid} {head}"))
                entry.set_result(value) if ok else entry.set_exception(value)
                del entry, value
        finally:
            if isolated is not None:
                isolated.close()


def cancel_and_tell(tell: Callable[[], None]) -> Callable:
    """Future.cancel that also tells the dispatcher, which tells the worker holding the call."""
    def cancel(self: cf.Future) -> bool:
        if not cf.Future.cancel(self):
            return False
        tell()
        return True
    return cancel


def fail(entry: Any, error: BaseException) -> None:
    """Fail a call not finished yet (a Future in any state, or a Slot)."""
    try:
        entry.set_exception(error)
    except (cf.InvalidStateError, RuntimeError):
        pass   # it finished or was cancelled meanwhile


class Dispatch:
    """The multi-rank dispatch loop of one Dispatcher, with what it holds per worker."""

    def __init__(self, d: Dispatcher):
        self.d, self.comm = d, d.world.comm
        self.tids = count()
        self.starting = set(d.workers)    # sent START, no READY or BROKEN yet
        self.usable: list[int] = []      # READY and not broken since
        self.free: deque[int] = deque()  # one entry per batch a worker can take now
        self.idle: set[int] = set()      # usable workers that hold no call
        self.held = {w: deque() for w in d.workers}    # (task id, entry) in the order sent
        self.started = dict.fromkeys(d.workers, 0)     # leading held entries marked as started
        self.batches = {w: deque() for w in d.workers}   # [isend request, results still due]
        self.told: set[int] = set()                    # ids the workers were told to skip
        self.requests: list = []                       # isends of cancels, completed at the end
        self.share = Guided(k=PREFETCH)
        self.debug = logger.isEnabledFor(logging.DEBUG)

    def run(self) -> None:
        """Start the workers, dispatch until shutdown, end the workers; if the dispatch fails
        (mtcmpi's own error), every call fails with BrokenExecutor and the workers still end."""
        d, status = self.d, MPI.Status()
        for worker in d.workers:
            self.comm.Send([d.start_order, MPI.BYTE], worker, p.ORDERS)
        try:
            self.loop(status)
        except BaseException as exc:
            held = [entry for h in self.held.values() for _, entry in h]
            for h in self.held.values():
                h.clear()
            d.failed(exc, held)
        self.end(status)

    def loop(self, status: MPI.Status) -> None:
        """Keep PREFETCH batches at every worker while there is work; settle results as they come.

        How it waits (measured with 1 driver + 1 worker on 2 cores): with nothing in flight it
        sleeps on the condition submit() notifies, using no CPU. With batches in flight it polls
        Improbe, napping on that condition 10 us doubling to DRIVER_PAUSE between polls: a
        submission a free worker can take is sent at once, a result is seen within 1 ms, and
        waiting on long tasks costs rank 0 about 5% of a core. Blocking in MPI_Mprobe whenever
        every worker is full gave the same throughput but Open MPI spins in it unless
        oversubscribed: a whole core for as long as the tasks run.
        """
        d, backoff = self.d, Backoff(DRIVER_PAUSE)
        while True:
            if d.cancels or d.cancel_all:
                self.tell_cancels()
            while self.free and d.queue and d.broken is None:
                self.send(self.free.popleft())
            if not self.starting and not any(self.held.values()):
                with d.wake:
                    while not (d.queue or d.closed or d.cancels):
                        d.wake.wait()
                    if not d.queue and d.closed:
                        return
            elif self.receive(status):
                backoff.reset()
            else:
                pause = backoff.next()
                with d.wake:
                    if not (self.free and d.queue) and not d.cancels and not d.cancel_all:
                        d.wake.wait(pause)

    def send(self, worker: int) -> None:
        """Send the next batch of queued calls to worker (it has room for one), or to a worker
        that holds none if worker holds some, so a call does not wait behind another."""
        if self.idle and self.held[worker]:
            worker, other = self.idle.pop(), worker
            self.free.remove(worker)
            self.free.appendleft(other)
        self.idle.discard(worker)
        batch = self.d.take(min(MAX_BATCH, self.share.chunk_size(len(self.d.queue), len(self.usable))))
        if not batch:
            self.free.appendleft(worker)
            return
        held, tasks = self.held[worker], []
        idle = not held
        for entry, payload in batch:
            tid = next(self.tids)
            tasks.append((tid, payload))
            held.append((tid, entry))
        request = self.comm.isend((p.TASKS, tasks), worker, p.ORDERS)
        self.batches[worker].append([request, len(tasks)])
        if self.debug:
            logger.debug("sent tasks %d-%d to rank %d (%d queued)", tasks[0][0], tasks[-1][0], worker,
                      len(self.d.queue))
        if idle:
            self.mark_started(worker)

    def mark_started(self, worker: int) -> None:
        """Mark as running the call worker runs now: the first of those it holds not cancelled."""
        held, i = self.held[worker], self.started[worker]
        skipped = []
        while i < len(held):
            tid, entry = held[i]
            i += 1
            if entry.set_running_or_notify_cancel():
                break
            if tid not in self.told:
                skipped.append(tid)   # cancelled, and its worker not told yet
        self.started[worker] = i
        if skipped:
            self.tell(worker, skipped)

    def tell_cancels(self) -> None:
        """Tell each worker the ids of the calls it holds that were cancelled before starting
        (all of them not started, after shutdown(cancel_futures=True))."""
        d = self.d
        with d.wake:   # once: calls queued after shutdown are refused
            d.cancels, cancel_all, d.cancel_all = False, d.cancel_all, False
        for worker, held in self.held.items():
            ids = []
            for tid, entry in list(held)[self.started[worker]:]:
                if cancel_all:
                    entry.cancel()
                if entry.cancelled() and tid not in self.told:
                    ids.append(tid)
            if ids:
                self.tell(worker, ids)

    def tell(self, worker: int, ids: list[int]) -> None:
        self.told.update(ids)
        self.requests.append(self.comm.isend((p.CANCEL, ids), worker, p.ORDERS))
        if self.debug:
            logger.debug("told rank %d to skip %d cancelled tasks", worker, len(ids))

    def receive(self, status: MPI.Status) -> bool:
        """Act on one reply of a worker if one has come; False if none had."""
        message = self.comm.improbe(MPI.ANY_SOURCE, p.REPLIES, status)
        if message is None:
            return False
        worker = status.Get_source()
        number, kind, data = message.recv()
        if number != self.d.number:
            return True   # left over from an Executor that broke: nothing waits for it
        if kind == p.RESULTS:
            self.settle(worker, *data)
        elif kind == p.READY:
            self.usable.append(worker)
            self.started_up(worker)
        elif kind == p.BROKEN:
            self.lose(worker, *data)
        elif kind == p.ENDED:
            self.ending.discard(worker)
        return True

    def started_up(self, worker: int) -> None:
        """worker answered START; once all have, the work goes out to them in turn (1, 2, ...,
        1, 2, ...), so the first calls are spread whatever order the answers came in."""
        self.starting.discard(worker)
        if not self.starting:
            self.free.extend(w for _ in range(PREFETCH) for w in sorted(self.usable))
            self.idle.update(self.usable)

    def settle(self, worker: int, codes: bytes, values: list) -> None:
        """Give each call its outcome, in the order the worker ran them."""
        held, started = self.held[worker], self.started[worker]
        told = self.told
        for code, value in zip(codes, values):
            if not held:
                return   # failed already: the Executor broke
            tid, entry = held.popleft()
            if told:
                told.discard(tid)
            if started:
                started -= 1
                go = not entry.done()
            else:
                try:
                    go = entry.set_running_or_notify_cancel()
                except RuntimeError:   # finished already: the Executor broke
                    go = False
            if go and code != p.SKIPPED:
                if code == p.RAW:
                    entry.set_result(value)
                else:
                    ok, outcome = decoded(code, value)
                    entry.set_result(outcome) if ok else entry.set_exception(outcome)
                    del outcome   # the reader may drop it at once: hold it no longer
        self.started[worker] = started
        self.answered(worker, len(codes))
        if held and not started:
            self.mark_started(worker)

    def answered(self, worker: int, n: int) -> None:
        """n more results of worker came: the batches answered in full make room for the next."""
        batches = self.batches[worker]
        while n and batches:
            batch = batches[0]
            k = min(n, batch[1])
            batch[1] -= k
            n -= k
            if not batch[1]:
                batches.popleft()[0].wait()   # complete: the worker has this batch
                self.free.append(worker)
        if not self.held[worker]:
            self.idle.add(worker)

    def lose(self, worker: int, headline: str, described, blob) -> None:
        """A worker cannot serve: its calls fail with BrokenExecutor; if its initializer failed,
        or no worker is left, the whole Executor breaks, as the standard pools do."""
        error = cf.BrokenExecutor(f"mtcmpi.Executor: {headline}: {described.type}: {described.message}")
        error.__cause__ = RemoteTraceback(described.traceback)
        logger.debug("rank %d broke: %s", worker, error)
        initializing = worker in self.starting
        if initializing:
            self.started_up(worker)
        if worker in self.usable:
            self.usable.remove(worker)
        self.free = deque(w for w in self.free if w != worker)
        self.idle.discard(worker)
        held = [entry for _, entry in self.held[worker]]
        self.held[worker].clear()
        self.started[worker] = 0
        self.requests.extend(request for request, _ in self.batches[worker])
        self.batches[worker].clear()
        if initializing or (not self.usable and not self.starting):
            everything = [entry for h in self.held.values() for _, entry in h]
            for h in self.held.values():
                h.clear()
            self.d.break_all(error, held + everything)
        else:
            for entry in held:
                fail(entry, error)

    def end(self, status: MPI.Status) -> None:
        """Tell every worker this Executor ends and wait until each has said so, so that no
        message of this Executor is left for the next one (or for the end of the job)."""
        self.ending = set(self.d.workers)
        for worker in self.d.workers:
            self.requests.append(self.comm.isend((p.END,), worker, p.ORDERS))
        backoff = Backoff(DRIVER_PAUSE)
        while self.ending:
            if not self.receive(status):
                backoff.sleep()
        MPI.Request.Waitall([*self.requests, *(r for b in self.batches.values() for r, _ in b)])
        if self.debug:
            logger.debug("Executor %d ended on ranks %s", self.d.number, self.d.workers)


@atexit.register
def finish_live_executors() -> None:
    """At exit, let Executors that were not shut down finish their calls (as the standard pools
    do) while MPI is still up: registered after mpi4py's finalizer, this runs before it."""
    for dispatcher in list(live.values()):
        dispatcher.close()
        dispatcher.thread.join()


class MapResults:
    """The outcomes of one map() call, filled in by the dispatcher and read in order (or as
    they come, unordered)."""

    CANCELLED = (False, None)

    def __init__(self, n: int, unordered: bool, tell: Callable[[], None]):
        self.outcomes: list[tuple[bool, Any] | None] = [None] * n
        self.cond = threading.Condition(threading.Lock())
        self.next = 0              # the index the reader waits for (-1: any, unordered)
        self.arrived: deque[int] | None = deque() if unordered else None
        self.closed = False        # the reader stopped early: drop what has not started
        self.tell = tell

    def settle(self, index: int, outcome: tuple[bool, Any]) -> None:
        """Store one outcome (the first only) and wake the reader if it waits for it. In order,
        the lock is taken only to wake: the reader sets `next` before it looks at the outcome,
        and this stores the outcome before it looks at `next`, so one of them sees the other."""
        if self.outcomes[index] is not None:
            return   # cancelled or failed already
        self.outcomes[index] = outcome
        if self.arrived is not None:
            with self.cond:
                self.arrived.append(index)
                self.cond.notify()
        elif index == self.next:
            with self.cond:
                self.cond.notify()

    def read(self, end: float | None) -> Iterator:
        """Each value in turn, raising a failed call's exception (TimeoutError past end);
        closing it cancels the calls not started."""
        try:
            for i in range(len(self.outcomes)):
                yield self.pop(self.wait_for(i, end))
        finally:
            with self.cond:
                self.closed = True
            self.tell()

    def wait_for(self, i: int, end: float | None) -> int:
        """The index of the next outcome to read, once it is there."""
        with self.cond:
            self.next = i
            while (self.arrived is None and self.outcomes[i] is None) or \
                    (self.arrived is not None and not self.arrived):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError()
                self.cond.wait(left)
            return i if self.arrived is None else self.arrived.popleft()

    def pop(self, i: int) -> Any:
        """The value at i, or raise its exception; forgets it, so nothing read stays alive."""
        ok, value = self.outcomes[i]
        self.outcomes[i] = self.CANCELLED
        if not ok:
            raise value if value is not None else cf.CancelledError()
        return value


class Slot:
    """One call of a map: the Future methods the dispatcher uses, settling into MapResults."""

    __slots__ = ("results", "index")

    def __init__(self, results: MapResults, index: int):
        self.results, self.index = results, index

    def cancelled(self) -> bool:
        return self.results.closed or self.results.outcomes[self.index] is MapResults.CANCELLED

    def set_running_or_notify_cancel(self) -> bool:
        return not self.cancelled()

    def set_result(self, value: Any) -> None:
        self.results.settle(self.index, (True, value))

    def set_exception(self, exc: BaseException) -> None:
        self.results.settle(self.index, (False, exc))

    def cancel(self) -> bool:
        self.results.settle(self.index, MapResults.CANCELLED)
        return True

    def done(self) -> bool:
        return self.results.outcomes[self.index] is not None
