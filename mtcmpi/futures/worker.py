"""An Executor's worker: every rank of a communicator but 0 runs work_for_executors() while
rank 0 drives, and serves the Executors rank 0 creates there, one after another.

Per Executor (START ... END) a worker runs the initializer once, then the tasks in the order
they come, one at a time. Before each task, when it has run for FLUSH seconds since it last
did, it sends rank 0 the results so far (so rank 0 knows which task runs now: the next one)
and reads the orders waiting (new tasks, ids to skip because rank 0 cancelled them, END).
Every task's outcome is one code and one value in its batch's answer, each result pickled on
its own: whatever a task, its result or its pickling raises fails that task only.

Dataflow (protocol.py): a submit()'s result that is not small and plain stays here (`kept`)
until rank 0 releases it; this rank sends it to the rank whose call needs it when told (SEND,
between calls); rank 0 gets a copy with the done notice. A call whose input was
kept here takes it without a copy; one kept elsewhere waits for it on DATA, serving the
others' SENDs meanwhile (two ranks that wait for each other's value both go on).
"""
from __future__ import annotations

import logging
import pickle
import time
from collections import deque
from typing import Any, Callable

from .. import protocol as p
from .calls import DUMPS, PLAIN, InputLost, call_encoded, encoded, failure, loaded_with_inputs, travels_back

try:
    from mpi4py import MPI

    from ..world import QUIET_PAUSE, Backoff, World, poll_until
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
        self.kept: dict[int, Any] = {}         # task id -> value rank 0 has not released
        self.wanted: dict[int, int] = {}       # task id -> calls behind it here that take its value
        self.inbox: dict[int, list] = {}       # task id -> [(ok, pickled value or why lost)] from DATA
        self.outgoing: list = []               # isends of DATA not known complete
        self.where = f"on rank {world.rank}, host {world.host}, pid {world.pid}"

    def serve(self) -> None:
        """Obey rank 0's orders and run the tasks they bring, until STOP."""
        probe = self.comm.improbe
        while True:
            try:
                if self.pending:
                    self.run_pending()
                    continue
                self.answer()
                order = poll_until(lambda: probe(0, p.ORDERS) or self.take_data(), QUIET_PAUSE).recv()
                if not self.obey(order):
                    return
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
            tid, payload, refs = pending.popleft()
            if tid in skip:
                skip.discard(tid)
                codes.append(p.SKIPPED)
                values.append(None)
                continue
            try:
                if refs:
                    payload = self.with_inputs(payload, refs, isolated is not None)
                if isolated is None:   # inline: calls of no-ops run at 200k+/s here
                    fn, args, kwargs = loads(payload) if type(payload) is bytes else payload
                    value = fn(*args, **kwargs)
                    if refs is None:   # a map()'s call: its result travels back
                        code, value = (p.RAW, value) if type(value) in PLAIN else encoded(value)
                    else:
                        code, value = self.keep(tid, value)
                else:
                    code, value = isolated(payload)
                    if refs is not None and code in (p.RAW, p.PICKLED):
                        code, value = self.keep(tid, value if code == p.RAW else loads(value))
            except BaseException as exc:   # a task's SystemExit, KeyboardInterrupt... fail it only
                code, value = p.FAILED_CALL, failure(exc, f"task {tid} failed {self.where}:\n")
            codes.append(code)
            values.append(value)
        skip.clear()
        self.answer()

    def keep(self, tid: int, value: Any) -> tuple[int, Any]:
        """A submit()'s outcome: its value if small and plain, else HELD, the value kept here."""
        if travels_back(value):
            if tid in self.wanted:   # a call behind it takes it from here too
                self.kept[tid] = value
            return p.RAW, value
        copy = encoded(value)   # rank 0's copy (a PicklingError fails the call before anything is kept)
        self.kept[tid] = value
        return p.HELD, copy

    def with_inputs(self, payload: bytes, refs: tuple, pickled: bool) -> Any:
        """A dataflow call with its inputs' values in place: (fn, args, kwargs), or as bytes
        for the isolated child; InputLost if an input cannot be had."""
        values = []
        for holder, item in refs:
            if holder == -1:            # inline, or kept here and taken when the task came
                values.append(item)
            elif holder == -2:          # kept here once, lost since
                raise InputLost(item)
            elif holder == self.world.rank:   # ran here just before, in the same batch
                values.append(self.taken(item))
            else:
                values.append(self.received(holder, item))
        call = loaded_with_inputs(payload, values)
        return DUMPS(call) if pickled else call

    def taken(self, tid: int) -> Any:
        """The value of task tid, which ran here just before the call that takes it."""
        if tid not in self.kept:
            raise InputLost(f"input task {tid} did not succeed on rank {self.world.rank}")
        value = self.kept[tid]
        left = self.wanted.pop(tid) - 1
        if left:
            self.wanted[tid] = left
        elif travels_back(value):   # rank 0 has it: no one else will ask here
            del self.kept[tid]
        return value

    def received(self, holder: int, tid: int) -> Any:
        """The value of task tid that holder sends on DATA, once it has come (orders are obeyed
        meanwhile, so this rank's own SENDs go out while it waits)."""
        backoff = None
        while not (box := self.inbox.get(tid)):
            self.take_data()
            self.read_orders()
            if not self.serving:
                raise InputLost(f"the Executor ended before the value of task {tid} came from rank {holder}")
            backoff = backoff or Backoff(FLUSH)
            backoff.sleep()
        ok, data = box.pop()
        if not box:
            del self.inbox[tid]
        if not ok:
            raise InputLost(data)
        try:
            return pickle.loads(data)
        except BaseException as exc:
            raise InputLost(f"the value of task {tid} from rank {holder} does not unpickle on rank "
                            f"{self.world.rank}: {type(exc).__name__}: {exc}") from None

    def take_data(self) -> None:
        """Put the values other workers sent into the inbox (those of an ended Executor are
        dropped); None, so the idle loop can poll with it."""
        probe = self.comm.improbe
        while (message := probe(MPI.ANY_SOURCE, p.DATA)) is not None:
            number, tid, ok, data = message.recv()
            if number == self.executor and self.serving:
                self.inbox.setdefault(tid, []).append((ok, data))

    def send_values(self, pairs: list[tuple[int, int]]) -> None:
        """SEND: each (task id, target rank): the kept value goes to target on DATA, or why it cannot."""
        self.outgoing = [r for r in self.outgoing if not r.Test()]
        for tid, target in pairs:
            if tid in self.kept:
                try:
                    ok, data = True, DUMPS(self.kept[tid])
                except BaseException as exc:
                    ok, data = False, (f"the value of task {tid} does not pickle on rank {self.world.rank}: "
                                       f"{type(exc).__name__}: {exc}")
            else:
                ok, data = False, self.lost(tid)
            self.outgoing.append(self.comm.isend((self.executor, tid, ok, data), target, p.DATA))

    def lost(self, tid: int) -> str:
        return f"the value of task {tid} is no longer kept on rank {self.world.rank} (its worker broke)"

    def localized(self, tasks: list[tuple]) -> list[tuple]:
        """The tasks of a TASKS order with their inputs kept here taken now (a RELEASE that
        follows cannot drop them before they run)."""
        rank, kept, batch = self.world.rank, self.kept, None
        for i, (tid, payload, refs) in enumerate(tasks):
            if refs:
                local = []
                for ref in refs:
                    if ref[0] == rank:
                        if ref[1] in kept:
                            ref = (-1, kept[ref[1]])
                        elif ref[1] in (batch := batch or {task[0] for task in tasks}):
                            self.wanted[ref[1]] = self.wanted.get(ref[1], 0) + 1   # sent behind it
                        else:
                            ref = (-2, self.lost(ref[1]))
                    local.append(ref)
                tasks[i] = (tid, payload, tuple(local))
        return tasks

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
                self.pending.extend(self.localized(order[1]))
                self.pending.append(None)   # the batch ends: answer then, so rank 0 sends the next
        elif kind == p.CANCEL:
            self.skip.update(order[1])
        elif kind == p.SEND:
            self.send_values(order[1])
        elif kind == p.RELEASE:
            for tid in order[1]:
                self.kept.pop(tid, None)
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
        self.kept.clear()
        self.wanted.clear()
        self.inbox.clear()
        if self.outgoing:   # the targets take their DATA in their own loops, whatever they do
            poll_until(lambda: self.take_data() or MPI.Request.Testall(self.outgoing) or None, QUIET_PAUSE)
            self.outgoing.clear()
        if self.isolated is not None:
            self.isolated.close()
            self.isolated = None
