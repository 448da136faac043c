"""The Executor's dispatch on rank 0 when there are workers: what each worker holds, batches
out, results in, cancellations told, and the START/END of every worker (protocol.py).

Rank 0 knows which call a worker runs without being told per call: a worker runs what it
holds in the order sent, so the first call it holds that is not cancelled is the one running
(marked running() then); its results, sent at the end of each batch and every FLUSH seconds,
move that mark on.

Dataflow (graph.py, protocol.py): a submit()'s value that its worker keeps settles its Future
with a Held (where it is); a weak reference to that Future releases the value when the Future
is dropped; result() decodes rank 0's copy that came with it, so it works after the
Executor ended and after the worker broke. A dataflow call is sent with references to its inputs; a holder
that is not the call's worker is told to SEND the value there (values.py: that side of it).
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import weakref
from collections import deque
from functools import partial
from itertools import count
from typing import TYPE_CHECKING

from mpi4py import MPI

from .. import protocol as p
from ..errors import RemoteTraceback
from ..policies import Guided
from ..world import Backoff
from .calls import Held, decoded
from .values import KeptValues, fail, forget

if TYPE_CHECKING:
    from .pool import Dispatcher

DRIVER_PAUSE = 1e-3   # longest nap of rank 0 between polls for results (s)
PREFETCH = 2          # batches in flight per worker: one running, one waiting behind it
MAX_BATCH = 256       # tasks per message at most
logger = logging.getLogger(__name__)


class Dispatch(KeptValues):
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
        self.kept: dict[tuple[int, int], weakref.ref] = {}   # (worker, task id) -> its Future, weakly
        self.lost: set[int] = set()                     # workers that broke: their kept values are gone
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
            if len(d.released) > MAX_BATCH:
                self.release()
            while self.free and d.has_work() and d.broken is None:
                self.send(self.next_free())
            if not self.starting and not any(self.held.values()):
                self.release()
                with d.wake:
                    while not (d.has_work() or d.closed or d.cancels):
                        d.wake.wait()
                    if not d.has_work() and d.closed:
                        return
            elif self.receive(status):
                backoff.reset()
            else:
                pause = backoff.next()
                with d.wake:
                    if not (self.free and d.has_work()) and not d.cancels and not d.cancel_all:
                        d.wake.wait(pause)

    def next_free(self) -> int:
        """The free worker to send to next: one for which calls wait (it keeps their inputs)
        first, so another takes them only while it is busy."""
        if self.d.n_local:
            local = self.d.local
            for worker in self.free:
                if local[worker]:
                    self.free.remove(worker)
                    return worker
        return self.free.popleft()

    def send(self, worker: int) -> None:
        """Send the next batch of queued calls to worker (it has room for one), or to a worker
        that holds none if worker holds some, so a call does not wait behind another."""
        if self.idle and self.held[worker]:
            worker, other = self.idle.pop(), worker
            self.free.remove(worker)
            self.free.appendleft(other)
        self.idle.discard(worker)
        d = self.d
        batch = d.take(worker, min(MAX_BATCH, self.share.chunk_size(len(d.queue) + d.n_local, len(self.usable))))
        held, tasks, sends = self.held[worker], [], {}
        idle, first = not held, None
        work = deque(batch)
        del batch
        while work:
            entry, payload, inputs = work.popleft()
            refs = self.refs(entry, inputs, worker, sends) if inputs else inputs
            if inputs:
                inputs.clear()   # nothing needs them now: their Futures may go (and release their values)
            if refs is False:
                continue
            tid = next(self.tids)
            first = tid if first is None else first
            tasks.append((tid, payload, refs))
            held.append((tid, entry))
            if inputs is not None:   # a submit's call: its dependents may follow it here
                entry.at = (worker, tid)
                if entry.ahead is not None and len(tasks) + len(work) < MAX_BATCH:
                    work.extend(self.behind(entry, worker, first))
        del work
        if not tasks:
            self.free.appendleft(worker)
            return
        request = self.comm.isend((p.TASKS, tasks), worker, p.ORDERS)
        for holder, pairs in sends.items():
            self.order(holder, (p.SEND, pairs))
        self.batches[worker].append([request, len(tasks)])
        if self.debug:
            logger.debug("sent tasks %d-%d to rank %d (%d queued)", tasks[0][0], tasks[-1][0], worker,
                      len(self.d.queue))
        if idle:
            self.mark_started(worker)

    def order(self, worker: int, order: tuple) -> None:
        """Send worker an order whose answer, if any, nothing waits for here."""
        if len(self.requests) > MAX_BATCH:
            self.requests = [r for r in self.requests if not r.Test()]
        self.requests.append(self.comm.isend(order, worker, p.ORDERS))

    def mark_started(self, worker: int) -> None:
        """Mark as running the call worker runs now: the first of those it holds not cancelled."""
        held, i = self.held[worker], self.started[worker]
        skipped = []
        while i < len(held):
            tid, entry = held[i]
            i += 1
            if entry.done() and not entry.cancelled():
                continue   # failed while held (its input failed just before it): its worker fails it too
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
        self.order(worker, (p.CANCEL, ids))
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
        told, released, fast = self.told, self.d.released.append, self.d.future_class
        for code, value in zip(codes, values):
            if not held:
                return   # failed already: the Executor broke
            tid, entry = held.popleft()
            if told:
                told.discard(tid)
            if code == p.RAW and type(entry) is fast and entry.finish(value):
                started -= started > 0
                continue
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
                elif code == p.HELD:
                    self.kept[worker, tid] = weakref.ref(entry, partial(forget, released, (worker, tid)))
                    entry.set_result(Held(worker, tid, value))
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
        self.lost.add(worker)
        self.d.lost(worker)
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
