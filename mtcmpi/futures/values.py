"""Rank 0's side of the values workers keep (dataflow, protocol.py): a dataflow call's inputs
as references, the small calls that travel right behind their inputs, the values fetched for
Future.result() (and at shutdown, for the Futures still alive), and the values released when
their Futures are dropped. A mixin of dispatch.Dispatch, whose thread runs all of it."""
from __future__ import annotations

import concurrent.futures as cf
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable

from mpi4py import MPI

from .. import protocol as p
from ..world import Backoff
from .calls import Held, InputLost, decoded

if TYPE_CHECKING:
    from .pool import Dispatcher

FINISHED = cf._base.FINISHED
PENDING_OR_RUNNING = (cf._base.PENDING, cf._base.RUNNING)
DRIVER_PAUSE = 1e-3   # longest nap of rank 0 between polls for a fetched value (s)


def fail(entry: Any, error: BaseException) -> None:
    """Fail a call not finished yet (a Future in any state, or a Slot)."""
    try:
        entry.set_exception(error)
    except (cf.InvalidStateError, RuntimeError):
        pass   # it finished or was cancelled meanwhile


def forget(released: Callable[[tuple[int, int]], None], key: tuple[int, int], _ref: weakref.ref) -> None:
    """A Future whose value a worker keeps was dropped: release the value (the dispatcher
    tells its worker)."""
    released(key)


class KeptValues:
    """What Dispatch knows of the values its workers keep, and how it moves them."""

    d: Dispatcher
    comm: MPI.Comm
    kept: dict[tuple[int, int], weakref.ref]          # (worker, task id) -> its Future, weakly
    fetching: dict[tuple[int, int], list[cf.Future]]  # asked, not come
    lost: set[int]                                     # workers that broke

    def refs(self, entry: cf.Future, inputs: list[cf.Future], worker: int, sends: dict) -> tuple | bool:
        """A dataflow call's inputs as references for worker: (-1, value) for a value rank 0
        has, (holder, task id) for a kept one (its holder told to SEND it if not worker);
        False if a holder broke (the call then fails with DependencyError naming the input)."""
        refs = []
        for future in inputs:
            if future._state != FINISHED:   # sent in this batch, ahead of this call
                refs.append(future.at)
                continue
            value = future._result
            if type(value) is Held and getattr(type(future), "dispatcher", None) is not self.d:
                value = future.result()   # kept by another Executor's worker: it comes inline
            if type(value) is not Held:
                refs.append((-1, value))
                continue
            if value.worker in self.lost and value.arrived() and value.fetched[0]:
                refs.append((-1, value.fetched[1]))   # its holder broke; rank 0's copy goes
                continue
            if value.worker in self.lost:
                from ..graph import DependencyError
                fail(entry, DependencyError(getattr(entry, "name", "a call"), f"task {value.tid} (kept on rank "
                                            f"{value.worker})", f"its value is lost: rank {value.worker} broke"))
                return False
            if value.worker != worker:
                sends.setdefault(value.worker, []).append((value.tid, worker))
            refs.append((value.worker, value.tid))
        return tuple(refs)

    def behind(self, entry: cf.Future, worker: int, first: int) -> list[tuple]:
        """The small dataflow calls waiting for entry that can travel right behind it: each of
        their inputs done, or in this batch (task id >= first) to this worker. The worker
        then takes the value without a round trip through rank 0 (a chain runs at its speed)."""
        ready, d = [], self.d
        for future, payload, inputs in entry.ahead:
            if future.waits and all(
                    (f._state == FINISHED and f._exception is None) or
                    (f._state in PENDING_OR_RUNNING and getattr(f, "at", None) is not None
                     and f.at[0] == worker and f.at[1] >= first and type(f).dispatcher is d)
                    for f in inputs):
                with d.wake:
                    if future.waits and not future.cancelled():
                        future.waits = False
                        ready.append((future, payload, inputs))
        entry.ahead = None
        return ready

    def release(self) -> None:
        """Tell the holders of the values whose Futures were dropped to drop them too."""
        released, tids = self.d.released, defaultdict(list)
        while released:
            key = released.popleft()
            self.kept.pop(key, None)
            tids[key[0]].append(key[1])
        for worker, ids in tids.items():
            if worker not in self.lost:
                self.order(worker, (p.RELEASE, ids))

    def ask_fetches(self) -> None:
        """Ask the holders of the values Future.result() wants (the answers come on FETCHED)."""
        fetches, tids = self.d.fetches, defaultdict(list)
        while fetches:
            held, wanted = fetches.popleft()
            self.ask(held, wanted, tids)
        for worker, ids in tids.items():
            self.order(worker, (p.FETCH, ids))

    def ask(self, held: Held, wanted: cf.Future, tids: dict) -> None:
        key = (held.worker, held.tid)
        if held.worker in self.lost:
            wanted.set_exception(InputLost(f"the value of task {held.tid} is lost: rank {held.worker}, "
                                           "which kept it, broke"))
        else:
            if key not in self.fetching:
                tids[held.worker].append(held.tid)
            self.fetching[key].append(wanted)

    def fetch_now(self, held: Held) -> tuple[bool, object]:
        """Fetch a value from the dispatcher's own thread (a done-callback that asks for a
        result): ask, then take only FETCHED answers until it came."""
        wanted, tids = cf.Future(), defaultdict(list)
        self.ask(held, wanted, tids)
        for worker, ids in tids.items():
            self.order(worker, (p.FETCH, ids))
        backoff = Backoff(DRIVER_PAUSE)
        while not wanted.done():
            if not self.receive_fetched():
                backoff.sleep()
        return (True, wanted.result()) if wanted.exception() is None else (False, wanted.exception())

    def receive_fetched(self) -> bool:
        """Settle the fetched values of one FETCHED answer if one has come."""
        status = MPI.Status()
        message = self.comm.improbe(MPI.ANY_SOURCE, p.FETCHED, status)
        if message is None:
            return False
        worker = status.Get_source()
        number, items = message.recv()
        if number != self.d.number:
            return True
        for tid, code, value in items:
            ok, outcome = decoded(code, value)
            for wanted in self.fetching.pop((worker, tid), ()):
                wanted.set_result(outcome) if ok else wanted.set_exception(outcome)
        return True

    def fetch_kept(self) -> None:
        """Before the workers end: bring to rank 0 the kept values of the Futures still alive,
        so their result() works after the Executor ended."""
        tids: dict = defaultdict(list)
        pending = []
        for (worker, _), ref in list(self.kept.items()):
            future = ref()
            held = future._result if future is not None else None
            if type(held) is Held and held.fetched is Held.NOT_FETCHED and worker not in self.lost:
                wanted = cf.Future()
                self.ask(held, wanted, tids)
                pending.append((held, wanted))
        for worker, ids in tids.items():
            self.order(worker, (p.FETCH, ids))
        backoff = Backoff(DRIVER_PAUSE)
        while self.fetching:
            if not self.receive_fetched():
                backoff.sleep()
        for held, wanted in pending:
            exc = wanted.exception()
            held.fetched = (True, wanted.result()) if exc is None else (False, exc)

