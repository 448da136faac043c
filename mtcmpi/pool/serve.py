"""`mpiexec -n N python -m mtcmpi serve --connection FILE`: a pool of MPI ranks for a session.

Rank 0 bridges: it waits for the file, joins the session it names, and submits each task it
receives to an mtcmpi.Executor over the pool's ranks (the others serve it), sending results
back in batches as they finish. It beats every HEARTBEAT_S; a session silent for LOST_S is
gone and the pool leaves. Near its walltime (--walltime, else the batch system's end) it takes
no task that would not finish: it says so, gives back the tasks not started, lets the running
ones finish, and leaves with exit status 75, so a job script that resubmits on 75 starts a
fresh pool that joins again. The batch system's warning (SIGUSR1, SIGUSR2 or SIGTERM, which
mpirun passes to every rank) drains it the same way at once; tasks still running --grace
seconds later are given back too (the session runs them elsewhere, not counted as a loss) and
the pool ends with MPI_Abort(75), before the batch system kills it.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from concurrent.futures import Future
from functools import partial

import zmq
from mpi4py import MPI

from . import auth, calls, stopsignals, wire
from .connection import PYTHON, SessionError, reachable, read
from .. import __version__, errors
from ..errors import EXIT_OK, EXIT_STOPPED, EXIT_USAGE

HOST, PID = platform.node(), os.getpid()


def run_task(payload: bytes) -> tuple:
    """On a worker: run one pickled call; (ok, bytes, worker index, host, pid, start, end)."""
    rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    start = time.time()
    ok, blob = calls.run(payload, f"rank {rank} on {HOST}, pid {PID}")
    return ok, blob, rank - 1 if size > 1 else 0, HOST, PID, start, time.time()


def serve_main(path: str, end: float | None, wait: float, grace: float = 20.0) -> int:
    """Collective over COMM_WORLD: rank 0 bridges the session to the Executor, the others run
    tasks. Every rank returns rank 0's exit status."""
    import mtcmpi

    comm = MPI.COMM_WORLD
    with mtcmpi.executor(comm) as ex:
        if ex is not None:
            bridge = Bridge(ex, path, comm.Get_size(), end, grace)
            status = bridge.run(wait)
            if bridge.abandoned:   # tasks still running after --grace: end now, not at the kill
                comm.Abort(EXIT_STOPPED)
        else:
            status = None
    return comm.bcast(status, root=0)


def say(text: str) -> None:
    """One line of the server's on stderr."""
    errors.say(f"mtcmpi serve: {text}")


class Bridge:
    """Rank 0 of a pool: the session's socket on one side, the pool's Executor on the other."""

    def __init__(self, ex, path: str, size: int, end: float | None, grace: float = 20.0):
        self.ex, self.path, self.size, self.end, self.grace = ex, path, size, end, grace
        self.workers = max(1, size - 1)
        self.context = zmq.Context()
        self.running: dict[int, Future] = {}
        self.finished: list[tuple[int, tuple | None]] = []
        self.lock = threading.Lock()
        self.wakeup = wire.Wakeup()   # a task finished
        self.mean: float | None = None
        self.draining = False
        self.give_up: float | None = None   # after a stop signal: leave by then (monotonic)
        self.abandoned = False

    def run(self, wait: float) -> int:
        try:
            sock, number = self.join(wait)
        except SessionError as exc:
            say(f"error: {exc}")
            return EXIT_USAGE
        if sock is None:
            say(f"got {stopsignals.first()[1]} (the walltime is near) before a session was found; leaving")
            return EXIT_STOPPED
        try:
            say(f"pool {number}: {self.workers} workers joined the session in {self.path}")
            return self.bridge(sock, number)
        finally:
            sock.close(linger=int(wire.LINGER_S * 1000))   # what it sent last still arrives
            self.context.term()

    def join(self, wait: float) -> tuple[zmq.Socket | None, int]:
        """Wait (up to wait seconds) for the file to name a live session, and join it; (None,
        -1) if a stop signal came first."""
        give_up, told = time.monotonic() + wait, False
        while not stopsignals.first():
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
        return None, -1

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
        poller.register(self.wakeup.fd, zmq.POLLIN)
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
            warned = stopsignals.first()
            if not self.draining and (warned or self.end is not None
                                      and time.time() + (self.mean or 0) > self.end):
                self.drain(sock, number, warned)
            if self.draining and not self.running:
                self.send_finished(sock)
                wire.send(sock, wire.BYE)
                say(f"pool {number}: {f'got {warned[1]}' if warned else 'walltime reached'}; "
                    "left the session cleanly")
                return EXIT_STOPPED
            if self.give_up is not None and now > self.give_up:
                self.send_finished(sock)
                wire.send(sock, wire.BYE, list(self.running))   # these started: the session runs them again
                self.abandoned = True
                say(f"pool {number}: {len(self.running)} tasks still running {self.grace:g} s after "
                    f"{warned[1]} (--grace); the session runs them elsewhere; leaving")
                return EXIT_STOPPED

    def drain(self, sock: zmq.Socket, number: int, warned: tuple[float, str] | None) -> None:
        """Take no new task, give back those not started; after a stop signal, wait --grace
        seconds at most for the running ones."""
        self.draining = True
        wire.send(sock, wire.DRAIN)
        for future in list(self.running.values()):
            future.cancel()   # not started: given back to the session
        if warned:
            self.give_up = warned[0] + self.grace
            started = sum(not future.cancelled() for future in self.running.values())
            say(f"pool {number}: got {warned[1]} (the walltime is near): taking no new task, "
                f"waiting up to {self.grace:g} s for the {started} already with its workers")

    def start(self, tasks: list[tuple[int, bytes]]) -> None:
        if self.draining:   # sent before the session heard of the drain: given back at once
            with self.lock:
                self.finished.extend((tid, None) for tid, _ in tasks)
            return
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
            self.wakeup.wake()

    def send_finished(self, sock: zmq.Socket) -> None:
        self.wakeup.drain()
        with self.lock:
            finished, self.finished = self.finished, []
        for tid, outcome in finished:
            self.running.pop(tid, None)
            if outcome is not None:
                duration = outcome[6] - outcome[5]
                self.mean = duration if self.mean is None else 0.9 * self.mean + 0.1 * duration
        for part in wire.batches(finished):
            wire.send(sock, wire.DONE, part)
