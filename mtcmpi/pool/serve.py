"""`mpiexec -n N python -m mtcmpi serve --connection FILE`: a pool of MPI ranks for a session.

Rank 0 bridges: it waits for the file, joins the session it names, and submits each task it
receives to an mtcmpi.Executor over the pool's ranks (the others serve it), sending results
back in batches as they finish. It beats every HEARTBEAT_S; a session silent for LOST_S is
gone and the pool leaves. Near its walltime (--walltime, else the batch system's end) it takes
no task that would not finish: it says so, gives back the tasks not started, lets the running
ones finish, and leaves with exit status 75, so a job script that resubmits on 75 starts a
fresh pool that joins again.
"""
from __future__ import annotations

import os
import platform
import sys
import threading
import time
from concurrent.futures import Future
from functools import partial

import zmq
from mpi4py import MPI

from . import auth, calls, wire
from .connection import PYTHON, SessionError, reachable, read
from .. import __version__
from ..errors import EXIT_OK, EXIT_STOPPED, EXIT_USAGE

HOST, PID = platform.node(), os.getpid()


def run_task(payload: bytes) -> tuple:
    """On a worker: run one pickled call; (ok, bytes, worker index, host, pid, start, end)."""
    rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    start = time.time()
    ok, blob = calls.run(payload, f"rank {rank} on {HOST}, pid {PID}")
    return ok, blob, rank - 1 if size > 1 else 0, HOST, PID, start, time.time()


def serve_main(path: str, end: float | None, wait: float) -> int:
    """Collective over COMM_WORLD: rank 0 bridges the session to the Executor, the others run
    tasks. Every rank returns rank 0's exit status."""
    import mtcmpi

    comm = MPI.COMM_WORLD
    with mtcmpi.executor(comm) as ex:
        status = Bridge(ex, path, comm.Get_size(), end).run(wait) if ex is not None else None
    return comm.bcast(status, root=0)


def say(text: str) -> None:
    print(f"mtcmpi serve: {text}", file=sys.stderr, flush=True)


class Bridge:
    """Rank 0 of a pool: the session's socket on one side, the pool's Executor on the other."""

    def __init__(self, ex, path: str, size: int, end: float | None):
        self.ex, self.path, self.size, self.end = ex, path, size, end
        self.workers = max(1, size - 1)
        self.context = zmq.Context()
        self.running: dict[int, Future] = {}
        self.finished: list[tuple[int, tuple | None]] = []
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.mean: float | None = None
        self.draining = False

    def run(self, wait: float) -> int:
        try:
            sock, number = self.join(wait)
        except SessionError as exc:
            say(f"error: {exc}")
            return EXIT_USAGE
        try:
            say(f"pool {number}: {self.workers} workers joined the session in {self.path}")
            return self.bridge(sock, number)
        finally:
            sock.close(linger=0)
            self.context.term()

    def join(self, wait: float) -> tuple[zmq.Socket, int]:
        """Wait (up to wait seconds) for the file to name a live session, and join it."""
        give_up, told = time.monotonic() + wait, False
        while True:
            try:
                connection = read(self.path)
            except SessionError as exc:
                connection, problem = None, str(exc)
            if connection is not None and reachable(connection.address):
                sock = auth.dial(self.context, connection)
                answer = self.hello(sock)
                if answer is not None:
                    kind, body = answer
                    if kind == wire.REFUSED:
                        sock.close(linger=0)
                        raise SessionError(f"refused by {connection.describe()}: {body['error']}")
                    return sock, body["pool"]
                sock.close(linger=0)
                problem = f"{connection.describe()} did not answer"
            elif connection is not None:
                problem = f"{self.path} names {connection.describe()}, which is gone"
            if time.monotonic() > give_up:
                raise SessionError(f"no live session after {wait:g} s: {problem}")
            if not told:
                say(f"waiting for a session in {self.path} ({problem})")
                told = True
            time.sleep(0.5)

    def hello(self, sock: zmq.Socket) -> tuple[bytes, dict] | None:
        wire.send(sock, wire.HELLO, {"role": "pool", "mtcmpi": __version__, "python": PYTHON,
                                     "host": HOST, "pid": PID, "workers": self.workers,
                                     "deadline": self.end})
        if not sock.poll(wire.CONNECT_S * 1000):
            return None
        kind, data = sock.recv_multipart()
        return kind, wire.decode(kind, data)

    def bridge(self, sock: zmq.Socket, number: int) -> int:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        heard = beat = time.monotonic()
        while True:
            poller.poll(wire.HEARTBEAT_S * 1000)
            while sock.poll(0):
                heard = time.monotonic()
                kind, data = sock.recv_multipart()
                if kind == wire.TASKS:
                    self.start(wire.decode(kind, data))
                elif kind == wire.STOP:
                    self.ex.shutdown(wait=False, cancel_futures=True)
                    say(f"pool {number}: the session ended; leaving")
                    return EXIT_OK
            self.send_finished(sock)
            now = time.monotonic()
            if now - heard > wire.LOST_S:
                self.ex.shutdown(wait=False, cancel_futures=True)
                say(f"pool {number}: lost the session (no heartbeat for {wire.LOST_S:g} s); leaving")
                return EXIT_OK
            if now - beat >= wire.HEARTBEAT_S:
                beat = now
                wire.send(sock, wire.HEARTBEAT)
            if self.end is not None and not self.draining and time.time() + (self.mean or 0) > self.end:
                self.draining = True
                wire.send(sock, wire.DRAIN)
                for future in list(self.running.values()):
                    future.cancel()   # not started: given back to the session
            if self.draining and not self.running:
                self.send_finished(sock)
                wire.send(sock, wire.BYE)
                say(f"pool {number}: walltime reached; left the session cleanly")
                return EXIT_STOPPED

    def start(self, tasks: list[tuple[int, bytes]]) -> None:
        for tid, payload in tasks:
            future = self.ex.submit(run_task, payload)
            self.running[tid] = future
            future.add_done_callback(partial(self.done, tid))

    def done(self, tid: int, future: Future) -> None:
        """A task finished (in the Executor's thread): queue its outcome and wake the bridge."""
        if future.cancelled():
            outcome = None
        elif future.exception() is not None:   # the Executor itself failed the task
            outcome = (False, calls.failure(future.exception(), f"pool rank 0 on {HOST}"),
                       0, HOST, PID, time.time(), time.time())
        else:
            outcome = future.result()
        with self.lock:
            self.finished.append((tid, outcome))
            first = len(self.finished) == 1
        if first:
            os.write(self.wake_w, b"x")

    def send_finished(self, sock: zmq.Socket) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self.lock:
            finished, self.finished = self.finished, []
        for tid, outcome in finished:
            self.running.pop(tid, None)
            if outcome is not None:
                duration = outcome[6] - outcome[5]
                self.mean = duration if self.mean is None else 0.9 * self.mean + 0.1 * duration
        for part in wire.batches(finished):
            wire.send(sock, wire.DONE, part)
