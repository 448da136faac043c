"""Rank 0's side of the values workers keep (dataflow, protocol.py): a dataflow call's inputs
as references (a broken holder's by rank 0's copy), the small calls that travel right behind
their inputs, and the values released when their Futures are dropped. A mixin of dispatch.Dispatch, whose thread runs all of it."""
from __future__ import annotations

import concurrent.futures as cf
import weakref
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable

from mpi4py import MPI

from .. import protocol as p
from ..errors import exception_line
from .calls import Held

if TYPE_CHECKING:
    from .pool import Dispatcher

FINISHED = cf._base.FINISHED
PENDING_OR_RUNNING = (cf._base.PENDING, cf._base.RUNNING)


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
            if value.worker in self.lost:   # its holder broke: rank 0's copy goes instead
                ok, copy = value.outcome()
                if not ok:
                    from ..graph import DependencyError
                    fail(entry, DependencyError(getattr(entry, "name", "a call"), f"task {value.tid} (kept on rank "
                                                f"{value.worker})", f"its value is lost: rank {value.worker} broke, "
                                                f"and rank 0's copy does not unpickle: {exception_line(copy)}"))
                    return False
                refs.append((-1, copy))
                continue
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
