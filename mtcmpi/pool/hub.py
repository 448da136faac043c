"""The session: one thread that owns the listening socket, the task queue and the pools.

Clients submit batches of pickled calls; the session hands them to live pools, at most a
window of tasks each (enough for about WORK_AHEAD_S of work per worker, from the tasks'
measured durations), and routes the results back. It remembers which pool holds each task,
so a pool that is gone loses no task: what it held goes back to the front of the queue. A
pool is gone when its connection closes (its processes died: seen within a second) or when it
says nothing for LOST_S seconds (a node or network lost). A task that was on MAX_LOSSES lost pools fails instead
(status crashed). A pool near its walltime drains: it gets no new task and gives back those
not started. Results from a pool for a task it no longer holds are dropped: each task
completes exactly once.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import Callable

import zmq

from . import auth, wire
from .calls import failure
from .connection import PYTHON, Connection, check_versions, default_ip, expand, reachable, read, write
from .. import __version__
from ..errors import UsageError

log = logging.getLogger("mtcmpi.pool")
MAX_LOSSES = 3        # a task on this many lost pools fails (like Dask's allowed-failures)
WORK_AHEAD_S = 0.05   # seconds of work a pool holds per worker beyond the one running
WINDOW = (2, 256)     # tasks per worker a pool may hold, at least and at most


class PoolLost(Exception):
    """A task was running on pools that were lost too many times: it fails rather than kill more."""


@dataclass
class Task:
    client: bytes
    ctid: int
    payload: bytes
    attempts: int = 0
    losses: int = 0
    pool: "Pool | None" = None


@dataclass
class Pool:
    ident: bytes
    number: int
    workers: int
    offset: int            # its workers are ranks offset ... offset+workers-1 of the session
    host: str
    deadline: float | None
    seen: float
    held: dict[int, Task] = field(default_factory=dict)
    mean: float | None = None   # a task's mean duration here (s), exponentially weighted
    draining: bool = False

    def window(self) -> int:
        low, high = WINDOW
        if self.mean is None:
            return self.workers * low
        ahead = high if self.mean <= 0 else int(WORK_AHEAD_S / self.mean)
        return self.workers * max(low, min(high, 2 + ahead))

    def label(self) -> str:
        return f"pool {self.number} on {self.host}"


@dataclass
class Client:
    ident: bytes
    seen: float
    tasks: dict[int, int] = field(default_factory=dict)   # its task number -> session task id


class Hub:
    """The session owner: listens at ip (port, or a free one) with the keys of connection."""

    def __init__(self, connection: Connection, ip: str, port: int | None = None,
                 max_losses: int = MAX_LOSSES):
        self.context = zmq.Context()
        self.sock, self.auth, self.monitor, address = auth.listen(self.context, connection, ip, port)
        connection.address = address
        self.connection, self.max_losses = connection, max_losses
        self.pools: dict[bytes, Pool] = {}
        self.clients: dict[bytes, Client] = {}
        self.tasks: dict[int, Task] = {}
        self.queue: deque[int] = deque()
        self.tids, self.numbers, self.offset = count(), count(), 0
        self.stopping = threading.Event()
        self.say: Callable[[str], None] = lambda text: None
        self.thread: threading.Thread | None = None

    def start(self) -> "Hub":
        """Serve in a daemon thread."""
        self.thread = threading.Thread(target=self.run, name="mtcmpi-session", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Tell every pool and client the session ends, then close."""
        self.stopping.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        beat = time.monotonic()
        try:
            while not self.stopping.is_set():
                events = dict(poller.poll(100))
                while self.sock.poll(0):   # first: a pool's last results and bye precede its close
                    self.receive(*self.sock.recv_multipart(copy=True))
                if self.monitor in events and auth.watch(self.monitor):
                    self.heartbeat()   # a closed connection: the beat to its peer fails at once
                self.assign()
                if time.monotonic() - beat >= wire.HEARTBEAT_S:
                    beat = time.monotonic()
                    self.heartbeat()
        finally:
            for ident in [*self.pools, *self.clients]:
                self.post(ident, wire.STOP)
            self.auth.stop()
            self.monitor.close()
            self.sock.close()
            self.context.term()

    # -- messages --

    def post(self, ident: bytes, kind: bytes, body=None) -> bool:
        """Send to a peer; False (and it is forgotten) if it has gone."""
        try:
            wire.send(self.sock, kind, body, to=ident)
            return True
        except zmq.ZMQError:
            self.lose(ident, "its connection closed")
            return False

    def receive(self, ident: bytes, kind: bytes, data: bytes) -> None:
        pool, client = self.pools.get(ident), self.clients.get(ident)
        peer = pool or client
        if kind == wire.HELLO:
            return self.hello(ident, wire.decode(kind, data))
        if peer is None:   # a peer this session forgot (lost, then back): it must leave
            self.post(ident, wire.STOP)
            return
        peer.seen = time.monotonic()
        if kind == wire.HEARTBEAT:
            return
        body = wire.decode(kind, data)
        if kind == wire.DONE and pool:
            self.done(pool, body)
        elif kind == wire.SUBMIT and client:
            for ctid, payload in body:
                tid = next(self.tids)
                self.tasks[tid] = Task(ident, ctid, payload)
                client.tasks[ctid] = tid
                self.queue.append(tid)
        elif kind == wire.CANCEL and client:
            for ctid in body:
                task = self.tasks.get(client.tasks.get(ctid, -1))
                if task is not None and task.pool is None:
                    self.forget(client.tasks.pop(ctid))
        elif kind == wire.DRAIN and pool:
            pool.draining = True
            log.info("mtcmpi: %s is near its walltime: it takes no new tasks", pool.label())
        elif kind == wire.BYE:   # a pool names the tasks it started and leaves unfinished
            self.lose(ident, "it left", counted=False, started=set(body or ()))

    def hello(self, ident: bytes, hello: dict) -> None:
        role = hello.get("role")
        who = f"a {role} on {hello.get('host', '?')} (pid {hello.get('pid', '?')})"
        error = check_versions({"mtcmpi": __version__, "python": PYTHON}, hello, who)
        if error:
            log.warning("mtcmpi: refused %s", error)
            self.post(ident, wire.REFUSED, {"error": error})
            self.news(f"refused {error}")
            return
        now = time.monotonic()
        if role == "pool":
            workers = int(hello["workers"])
            pool = Pool(ident, next(self.numbers), workers, self.offset, hello["host"],
                        hello.get("deadline"), now)
            self.offset += workers
            self.pools[ident] = pool
            self.post(ident, wire.WELCOME, {"pool": pool.number})
            self.news(f"{pool.label()} joined with {workers} workers")
        else:
            self.clients[ident] = Client(ident, now)
            self.post(ident, wire.WELCOME, {"pools": len(self.pools)})

    def news(self, text: str) -> None:
        """Tell every client what happened to the pools (they log it; so does a standalone hub)."""
        self.say(text)
        for ident in list(self.clients):
            self.post(ident, wire.NEWS, text)

    # -- tasks --

    def assign(self) -> None:
        """Hand queued tasks to pools with room, the least loaded first."""
        now = time.time()
        for pool in sorted(self.pools.values(), key=lambda p: len(p.held) / p.workers):
            if not self.queue:
                return
            if pool.draining or (pool.deadline and now + (pool.mean or 0) > pool.deadline):
                continue
            room, batch = pool.window() - len(pool.held), []
            while room > 0 and self.queue:
                tid = self.queue.popleft()
                task = self.tasks.get(tid)
                if task is None:
                    continue   # cancelled, or its client left
                batch.append((tid, task.payload))
                task.pool, task.attempts = pool, task.attempts + 1
                pool.held[tid] = task
                room -= 1
            for part in wire.batches(batch):
                if not self.post(pool.ident, wire.TASKS, part):
                    return

    def done(self, pool: Pool, results: list) -> None:
        """Results (or tasks given back unstarted) from a pool, routed to their clients."""
        out: dict[bytes, list] = {}
        for tid, outcome in results:
            task = pool.held.pop(tid, None)
            if task is None or task.pool is not pool:
                continue   # not this pool's any more: it was given to another
            task.pool = None
            if outcome is None:   # given back, never started
                task.attempts -= 1
                self.queue.appendleft(tid)
                continue
            ok, blob, rank, host, pid, start, end = outcome
            duration = end - start
            pool.mean = duration if pool.mean is None else 0.9 * pool.mean + 0.1 * duration
            meta = (pool.number, pool.offset + rank, host, pid, start, end, task.attempts)
            out.setdefault(task.client, []).append((task.ctid, ok, blob, meta))
            self.forget(tid)
        self.deliver(out)

    def deliver(self, out: dict[bytes, list]) -> None:
        for ident, results in out.items():
            for part in wire.batches(results):
                self.post(ident, wire.RESULTS, part)

    def forget(self, tid: int) -> None:
        task = self.tasks.pop(tid)
        client = self.clients.get(task.client)
        if client is not None:
            client.tasks.pop(task.ctid, None)

    def heartbeat(self) -> None:
        """Beat to every peer; a peer silent for LOST_S is lost."""
        now = time.monotonic()
        for ident, peer in [*self.pools.items(), *self.clients.items()]:
            if now - peer.seen > wire.LOST_S:
                self.lose(ident, f"no heartbeat for {wire.LOST_S:g} s")
            else:
                self.post(ident, wire.HEARTBEAT)

    def lose(self, ident: bytes, why: str, counted: bool = True, started: set[int] | None = None) -> None:
        """Forget a peer: a pool's tasks go back to the queue (or fail past max_losses); a
        client's tasks are dropped. A pool that left (not counted) held only the tasks in
        started on its workers: the others (sent as it left) were never tried there."""
        pool, client = self.pools.pop(ident, None), self.clients.pop(ident, None)
        if client is not None:
            for tid in client.tasks.values():
                task = self.tasks.pop(tid, None)
                if task is not None and task.pool is not None:
                    task.pool.held.pop(tid, None)
            return
        if pool is None:
            return
        failed: dict[bytes, list] = {}
        for tid, task in sorted(pool.held.items(), reverse=True):
            task.pool = None
            task.losses += counted
            if not counted and tid not in started:
                task.attempts -= 1
            if task.losses >= self.max_losses:
                error = PoolLost(f"the task was running on {task.losses} pools that were lost "
                                 f"(the last: {pool.label()}, {why}); it is not tried again")
                blob = failure(error, "lost")
                meta = (pool.number, -1, pool.host, -1, float("nan"), float("nan"), task.attempts)
                failed.setdefault(task.client, []).append((task.ctid, None, blob, meta))
                self.forget(tid)
            else:
                self.queue.appendleft(tid)
        self.news(f"{pool.label()} left ({why}); {len(pool.held)} of its tasks go to other pools"
                  if pool.held else f"{pool.label()} left ({why})")
        self.deliver(failed)


def hub_main(path: str, ip: str | None, port: int | None, max_losses: int) -> int:
    """`mtcmpi hub`: own a session in this process until SIGINT or SIGTERM."""
    path = expand(path)
    if max_losses < 1:
        raise UsageError(f"--max-losses must be >= 1, not {max_losses}")
    if os.path.exists(path) and reachable(read(path).address):
        raise UsageError(f"{path} names {read(path).describe()}, which is live: use that one")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    connection = Connection.new("")
    hub = Hub(connection, ip or default_ip(), port, max_losses)
    hub.say = lambda text: log.info("mtcmpi hub: %s", text)
    write(path, connection)
    signal.signal(signal.SIGTERM, lambda *_: hub.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: hub.stopping.set())
    print(f"mtcmpi hub: listening at {connection.address}; connection file {path}", flush=True)
    hub.run()
    return 0
