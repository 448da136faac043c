"""An Executor's worker: every rank of a communicator but 0 runs work_for_executors() while
rank 0 drives, and serves the Executors rank 0 creates there, one after another.

Per Executor (START ... END) a worker runs the initializer once, then the tasks in the order
they come, one at a time. Before each task, when it has run for FLUSH seconds since it last
did, it sends rank 0 the results so far (so rank 0 knows which task runs now: the next one)
and reads the orders waiting (new tasks, ids to skip because rank 0 cancelled them, END).
Every task's outcome is one code and one value in its batch's answer, each result pickled on
its own: whatever a task, its result or its pickling raises fails that task only.
"""
from __future__ import annotations

import logging
import pickle
import time
from collections import deque
from typing import Any, Callable

from .. import protocol as p
from .calls import PLAIN, call_encoded, encoded, failure

try:
    from ..world import QUIET_PAUSE, World, poll_until
except ImportError:   # no mpi4py: no rank serves (mtcmpi.map runs its loop)
    pass

FLUSH = 1e-3   # s: how often a busy worker answers rank 0 and reads its orders, at most
logger = logging.getLogger(__name__)
in_worker = False   # True while this rank serves: a task's own map then runs serially


def work_for_executors(comm: "MPI.Comm | None" = None) -> None:
    """Serve the Executors rank 0 of comm creates until it sends STOP (every rank but 0)."""
    global in_worker
    in_worker = True
    try:
        Worker(World.of(comm)).serve()
    finally:
        in_worker = False


class Worker:
    """One worker rank's state: the tasks it holds for the running Executor, and how it runs them."""

    def __init__(self, world: "World"):
        self.world, self.comm = world, world.comm
        self.executor = -1                     # the number of the Executor being served
        self.serving = False                   # between a START that succeeded and its END
        self.isolated = None                   # the forked child of isolate=True
        self.pending: deque[tuple[int, bytes] | None] = deque()   # None ends a batch
        self.skip: set[int] = set()
        self.codes, self.values = bytearray(), []   # results not yet sent
        self.where = f"on rank {world.rank}, host {world.host}, pid {world.pid}"

    def serve(self) -> None:
        """Obey rank 0's orders and run the tasks they bring, until STOP."""
        probe = self.comm.improbe
        while True:
            if not self.pending:
                self.answer()
                if not self.obey(poll_until(lambda: probe(0, p.ORDERS), QUIET_PAUSE).recv()):
                    return
                continue
            try:
                self.run_pending()
            except Exception as exc:   # mtcmpi's own failure, not a task's: tell rank 0
                self.broken(exc, "its worker loop failed")

    def run_pending(self) -> None:
        """Run the tasks held, answering rank 0 and reading its orders every FLUSH seconds."""
        pending, skip, codes, values = self.pending, self.skip, self.codes, self.values
        clock, loads, isolated = time.perf_counter, pickle.loads, self.isolated
        last = clock()
        while pending:
            now = clock()
            if now - last > FLUSH or pending[0] is None:   # a batch ended, or time to answer
                last = now
                self.answer()
                self.read_orders()
                if pending and pending[0] is None:
                    pending.popleft()
                continue
            tid, payload = pending.popleft()
            if tid in skip:
                skip.discard(tid)
                codes.append(p.SKIPPED)
                values.append(None)
                continue
            try:
                if isolated is None:   # inline: calls of no-ops run at 200k+/s here
                    fn, args, kwargs = loads(payload)
                    value = fn(*args, **kwargs)
                    code, value = (p.RAW, value) if type(value) in PLAIN else encoded(value)
                else:
                    code, value = isolated(payload)
            except BaseException as exc:   # a task's SystemExit, KeyboardInterrupt... fail it only
                code, value = p.FAILED_CALL, failure(exc, f"task {tid} failed {self.where}:\n")
            codes.append(code)
            values.append(value)
        skip.clear()
        self.answer()

    def read_orders(self) -> None:
        """Act on the orders that have come, without waiting. Open MPI matches an arrived
        message during a probe that finds nothing, so one probe alone sees it only at the next
        check (measured: a cancel came a whole task late); a second probe finds it."""
        probe = self.comm.improbe
        while (message := probe(0, p.ORDERS) or probe(0, p.ORDERS)) is not None:
            if not self.obey(message.recv()):
                raise RuntimeError("STOP came while an Executor was running")

    def answer(self) -> None:
        """Send rank 0 the results not yet sent."""
        if self.codes:
            self.reply(p.RESULTS, (bytes(self.codes), self.values))   # pickled now: clear after
            self.codes.clear()
            self.values.clear()

    def reply(self, kind: int, data: Any) -> None:
        self.comm.send((self.executor, kind, data), 0, p.REPLIES)

    def obey(self, order: tuple) -> bool:
        """Act on one order of rank 0; False for STOP."""
        kind = order[0]
        if kind == p.TASKS:
            if self.serving:
                self.pending.extend(order[1])
                self.pending.append(None)   # the batch ends: answer then, so rank 0 sends the next
        elif kind == p.CANCEL:
            self.skip.update(order[1])
        elif kind == p.START:
            self.start(*order[1:])
        elif kind == p.END:
            self.end()
            self.reply(p.ENDED, None)
        elif kind == p.STOP:
            self.end()
            return False
        return True

    def start(self, number: int, initializer: Callable | None, initargs: tuple, isolate: bool) -> None:
        """Begin serving Executor `number`: run its initializer, fork the isolated child."""
        self.executor = number
        try:
            if initializer is not None:
                initializer(*initargs)
            if isolate:
                from ..isolate import Isolated   # imported only when asked: it loads ctypes, faults
                self.isolated = Isolated(call_encoded)
            self.serving = True
        except BaseException as exc:
            self.broken(exc, "its initializer failed")
            return
        logger.debug("rank %d serves Executor %d", self.world.rank, number)
        self.reply(p.READY, None)

    def broken(self, exc: BaseException, what: str) -> None:
        """Tell rank 0 this worker cannot serve its Executor, and drop what it holds."""
        self.end()
        self.reply(p.BROKEN, (f"{what} {self.where}", *failure(exc, f"{what} {self.where}:\n")))

    def end(self) -> None:
        """Forget the Executor: its tasks, its ids to skip, its isolated child."""
        self.serving = False
        self.pending.clear()
        self.skip.clear()
        self.codes.clear()
        self.values.clear()
        if self.isolated is not None:
            self.isolated.close()
            self.isolated = None
