"""mtcmpi.connect(): a concurrent.futures.Executor whose tasks run in pools that join it.

    ex = mtcmpi.connect("~/.mtcmpi/pool.json")     # in a notebook: no MPI in this process
    mpirun -n 128 python -m mtcmpi serve --connection ~/.mtcmpi/pool.json   # in batch jobs

connect() joins the live session the file names, or (when there is none) starts one in a
thread of this process, listening, and writes the file. One I/O thread per Executor owns its
socket: submit() pickles the call, queues it and wakes that thread, which sends the queue in
batches and settles the Futures of the results as they come.
"""
from __future__ import annotations

import atexit
import logging
import os
import platform
import threading
import time
import weakref
from concurrent.futures import BrokenExecutor, Future, InvalidStateError
from concurrent.futures import Executor as StandardExecutor
from itertools import count, islice
from typing import Any, Callable, Iterable, Iterator

import zmq

from . import auth, wire
from .calls import Calls, value
from .connection import PYTHON, Connection, SessionError, default_ip, expand, reachable, read, write
from .hub import MAX_LOSSES, Hub
from .record import Record
from .. import __version__
from ..tasklog import CRASHED, FAILED, NOT_RUN, OK

log = logging.getLogger("mtcmpi.pool")
DEFAULT_FILE = "~/.mtcmpi/pool.json"
_open: "weakref.WeakSet[SessionExecutor]" = weakref.WeakSet()


def connect(connection: str = DEFAULT_FILE, *, ip: str | None = None, port: int | None = None,
            out: str | None = None, listen: bool = True,
            max_losses: int = MAX_LOSSES) -> "SessionExecutor":
    """An Executor for the session the connection file names, started here if none is live.

    ip, port: where a new session listens (default: the address of this host's name, which pools
    on other nodes reach; "127.0.0.1" for pools on this machine only; a free port). out: keep a
    per-task record there (an HDF5 file that `mtcmpi report` and `plot` read, journaled in
    OUT.journal while the session runs; a dead session's journal is recovered into OUT by the
    next connect(out=OUT), whose record follows it). listen=False:
    only join, never start a session. max_losses: a task that was on this many lost pools fails.
    """
    path = expand(connection)
    if os.path.exists(path) or not listen:
        existing = read(path)
        if reachable(existing.address):
            return SessionExecutor(existing, path, out)
        if not listen:
            raise SessionError(f"{path} names {existing.describe()}, which is gone (nothing "
                               f"listens at {existing.address})")
    if max_losses < 1:
        raise ValueError(f"max_losses must be >= 1, not {max_losses}")
    fresh = Connection.new("")
    hub = Hub(fresh, ip or default_ip(), port, max_losses).start()
    try:
        write(path, fresh)
        return SessionExecutor(fresh, path, out, hub)
    except BaseException:
        hub.stop()
        raise


class SessionFuture(Future):
    """A Future whose cancel() also takes its task off the session's queue."""

    def __init__(self, executor: "SessionExecutor", task: int):
        super().__init__()
        self._session, self._task = executor, task

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            self._session._cancelled(self._task)
        return cancelled


class SessionExecutor(StandardExecutor):
    """submit, map(chunksize), shutdown; Futures for wait() and as_completed(). A task's
    exception is re-raised with a RemoteTraceback naming pool, rank and host as __cause__."""

    def __init__(self, connection: Connection, path: str, out: str | None = None,
                 hub: Hub | None = None):
        self.connection, self.path, self.hub = connection, path, hub
        self._record = Record(out) if out else None   # first: it may refuse, or recover a record
        self.context = zmq.Context()
        self.sock = auth.dial(self.context, connection)
        try:
            self._join()
        except BaseException:
            self._close_socket()
            raise
        self._lock = threading.Lock()
        self._outbox: list[tuple[int, bytes]] = []
        self._cancels: list[int] = []
        self._futures: dict[int, SessionFuture] = {}
        self._tasks = count()
        self._closed, self._broken, self._woken = False, None, False
        self._calls = Calls()
        self._sent = 0   # tasks sent to the session so far
        self._wakeup: wire.Wakeup | None = wire.Wakeup()   # submit() and cancel() wake the I/O thread
        self._thread = threading.Thread(target=self._serve, name="mtcmpi-connect", daemon=True)
        self._thread.start()
        _open.add(self)

    def _join(self) -> None:
        hello = {"role": "client", "mtcmpi": __version__, "python": PYTHON,
                 "host": platform.node(), "pid": os.getpid()}
        wire.send(self.sock, wire.HELLO, hello)
        if not self.sock.poll(wire.CONNECT_S * 1000):
            raise SessionError(f"{self.path}: {self.connection.describe()} did not answer within "
                               f"{wire.CONNECT_S:g} s (is the file from another session?)")
        kind, data = self.sock.recv_multipart()
        if kind == wire.REFUSED:
            raise SessionError(f"{self.path}: refused by {self.connection.describe()}: "
                               f"{wire.decode(kind, data)['error']}")

    # -- the public API --

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Run fn(*args, **kwargs) in a pool; returns its Future at once."""
        return self._enqueue(self._calls.call(fn, args, kwargs))

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Results of fn over the iterables in order, as Executor.map documents; chunksize > 1
        sends each chunksize calls as one task (the way to 50,000 tiny calls a second)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        end = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables)
        if chunksize == 1:
            futures = [self._enqueue(self._calls.call(fn, args, {})) for args in calls]
        else:
            futures = [self._enqueue(self._calls.call(fn, (chunk,), {}, chunked=True))
                       for chunk in iter(lambda: list(islice(calls, chunksize)), [])]
        return self._in_order(futures, end, chunksize > 1)

    @staticmethod
    def _in_order(futures: list[Future], end: float | None, chunked: bool) -> Iterator:
        try:
            futures.reverse()
            while futures:
                future = futures[-1]
                result = future.result(None if end is None else max(0.0, end - time.monotonic()))
                futures.pop()
                yield from (result if chunked else (result,))
        finally:
            for future in futures:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; cancel the queued ones if asked; wait for the rest if asked. The
        session ends with the Executor that started it (pools are told to stop)."""
        with self._lock:
            self._closed = True
            pending = list(self._futures.values()) if cancel_futures else []
        for future in pending:
            future.cancel()
        self._wake()
        if wait:
            self._thread.join()

    # -- the client side of the I/O thread --

    def _enqueue(self, payload: bytes) -> Future:
        with self._lock:
            if self._broken:
                raise BrokenExecutor(self._broken)
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            task = next(self._tasks)
            future = self._futures[task] = SessionFuture(self, task)
            self._outbox.append((task, payload))
            wake = not self._woken
            self._woken = True
        if wake:
            self._wakeup.wake()
        return future

    def _cancelled(self, task: int) -> None:
        with self._lock:
            self._futures.pop(task, None)
            self._cancels.append(task)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            if self._woken or self._wakeup is None:
                return
            self._woken = True
            wakeup = self._wakeup
        wakeup.wake()

    # -- the I/O thread --

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._wakeup.fd, zmq.POLLIN)
        heard = beat = time.monotonic()
        try:
            while True:
                poller.poll(wire.HEARTBEAT_S * 1000)
                self._flush()
                while self.sock.poll(0):
                    heard = time.monotonic()
                    if not self._receive(*self.sock.recv_multipart()):
                        return
                now = time.monotonic()
                if now - heard > wire.LOST_S:
                    return self._break(f"lost {self.connection.describe()}: no heartbeat for "
                                       f"{wire.LOST_S:g} s")
                if now - beat >= wire.HEARTBEAT_S:
                    beat = now
                    wire.send(self.sock, wire.HEARTBEAT)
                if self._record:
                    self._record.flush(self._sent)
                with self._lock:
                    if self._closed and not self._futures and not self._outbox:
                        wire.send(self.sock, wire.BYE)
                        return
        except BaseException as exc:
            self._break(f"the mtcmpi.connect() I/O thread failed: {exc!r}")
            raise
        finally:
            self._finish()

    def _flush(self) -> None:
        """Send what submit() and cancel() queued."""
        self._wakeup.drain()
        with self._lock:
            outbox, self._outbox = self._outbox, []
            cancels, self._cancels = self._cancels, []
            self._woken = False
        for part in wire.batches(outbox):
            wire.send(self.sock, wire.SUBMIT, part)
        if outbox:
            self._sent = outbox[-1][0] + 1
        if cancels:
            wire.send(self.sock, wire.CANCEL, cancels)
            if self._record:
                for task in cancels:
                    self._record.add(task, (-1, -1, "", -1, float("nan"), float("nan"), 0), NOT_RUN, None)

    def _receive(self, kind: bytes, data: bytes) -> bool:
        """Handle one message from the session; False when the session ended."""
        if kind == wire.RESULTS:
            self._settle(wire.decode(kind, data))
        elif kind == wire.NEWS:
            text = wire.decode(kind, data)
            (log.warning if text.startswith("refused") else log.info)("mtcmpi: %s", text)
        elif kind == wire.STOP:
            self._break(f"{self.connection.describe()} ended")
            return False
        return True

    def _settle(self, results: list) -> None:
        with self._lock:
            futures = [self._futures.pop(r[0], None) for r in results]
        for future, (task, ok, blob, meta) in zip(futures, results):
            where = f"pool {meta[0]}"
            outcome, error = value(bool(ok), blob, where)
            if self._record:
                self._record.add(task, meta, OK if error is None else CRASHED if ok is None else FAILED, error)
            if future is None:
                continue   # cancelled meanwhile
            try:
                future.set_result(outcome) if error is None else future.set_exception(outcome)
            except InvalidStateError:
                pass   # cancelled just now

    def _break(self, reason: str) -> None:
        """The session is gone: every pending Future fails with reason, no new task is taken."""
        with self._lock:
            self._broken = reason
            futures, self._futures = list(self._futures.values()), {}
        if futures:
            log.warning("mtcmpi: %s; %d tasks fail", reason, len(futures))
        for future in futures:
            try:
                future.set_exception(BrokenExecutor(reason))
            except InvalidStateError:
                pass

    def _finish(self) -> None:
        self._close_socket()
        if self.hub is not None:
            self.hub.stop()
        with self._lock:
            self._wakeup.close()
            self._wakeup = None
        _open.discard(self)
        if self._record:
            self._record.write(next(self._tasks), self.connection.address)

    def _close_socket(self) -> None:
        self.sock.close(linger=0)
        self.context.term()


@atexit.register
def _shutdown_open() -> None:
    """At exit, cancel what has no result yet (no pool may be left to run it) and write the records."""
    for executor in list(_open):
        executor.shutdown(wait=True, cancel_futures=True)
