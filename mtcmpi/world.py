"""The MPI world as mtcmpi sees it: who am I, agree on errors, wait without spinning, abort."""
from __future__ import annotations

import math
import os
import pickle
import sys
import time
import warnings
from array import array
from functools import cache
from typing import Callable, NamedTuple, TypeVar

from mpi4py import MPI

from .errors import UsageError, exception_line, say


T = TypeVar("T")
SPIN = 1e-3        # how long a waiting rank probes before it starts to sleep (seconds)
MAX_PAUSE = 2e-4   # longest sleep between probes of the engine's master and workers (seconds)
QUIET_PAUSE = 1e-2   # longest sleep where latency is free: the end of a run, an idle Executor worker
# longest sleep in a wait for a collective: it advances only when each rank tests it, so each
# of its ~log2(ranks) rounds can cost one sleep. At QUIET_PAUSE an agreement took 60-90 ms on
# 64 ranks, at 1 ms 11-17 ms (scaling/startup.py's start-up: 0.08 s less)
COLLECTIVE_PAUSE = 1e-3
FIRST_PAUSE = 1e-5   # every backoff starts here and doubles
BACKOFF_ENV = "MTCMPI_BACKOFF"   # seconds: overrides every cap above (as MPI4PY_FUTURES_BACKOFF)


@cache
def longest_pause(default: float) -> float:
    """The cap on a backoff's sleeps: $MTCMPI_BACKOFF seconds if set, else default (the
    constant measured for that wait). A value that is not a number >= 0 is ignored, with a
    warning: it is read in the middle of a run, where raising would leave other ranks waiting."""
    value = os.environ.get(BACKOFF_ENV)
    if value is None:
        return default
    try:
        pause = float(value)
    except ValueError:
        pause = -1.0
    if not 0 <= pause < float("inf"):
        warnings.warn(f"{BACKOFF_ENV}={value!r} ignored: give the longest pause between polls in "
                      "seconds, a number >= 0", stacklevel=2)
        return default
    return pause


class Backoff:
    """Pauses between polls that double from 10 us to a cap, so a waiting rank leaves the CPU
    without adding much latency to a message that comes soon. The one backoff of mtcmpi."""

    __slots__ = ("cap", "pause")

    def __init__(self, cap: float):
        self.cap = longest_pause(cap)
        self.pause = FIRST_PAUSE

    def next(self) -> float:
        """The pause to take now; the next one doubles."""
        pause = self.pause
        self.pause = min(2 * pause, self.cap)
        return pause

    def reset(self) -> None:
        """Something came: the next wait starts short again."""
        self.pause = FIRST_PAUSE

    def sleep(self) -> None:
        time.sleep(self.next())


def poll_until(probe: Callable[[], T | None], cap: float) -> T:
    """Call probe until it returns something other than None, backing off up to cap between."""
    if (found := probe()) is not None:
        return found
    backoff = Backoff(cap)
    while (found := probe()) is None:
        backoff.sleep()
    return found


class World(NamedTuple):
    """This rank's place in a communicator. (Records on every rank's start-up path are
    NamedTuples or plain classes, not dataclasses: importing dataclasses, with inspect, ast and
    dis, and building each class cost ~15 ms of CPU a rank, the 64 ranks on a node together a
    second of its cores.)"""

    comm: MPI.Comm
    rank: int
    size: int
    host: str
    pid: int

    @classmethod
    def of(cls, comm: MPI.Comm | None = None) -> "World":
        comm = MPI.COMM_WORLD if comm is None else comm
        return cls(comm, comm.Get_rank(), comm.Get_size(), os.uname().nodename, os.getpid())

    def agree(self, error: str | None, unexpected: Exception | None = None,
              least: float = math.inf) -> float:
        """Collective: raise UsageError on every rank if any rank has an error (lowest rank's
        wins); on the rank whose error came from `unexpected`, re-raise that instead, with its
        traceback (the CLI aborts, exit 3). Returns the least `least` over the ranks, taken in
        the same reduction (the job's launch is the first rank's start: no collective of its own).

        Two small collectives instead of an allgather of strings, so it stays cheap at 12k ranks.
        The ranks reach it at different times at start-up (imports, rank 0's checks): it waits
        quietly, so early ranks leave the CPU to the ones still working.
        """
        mine, first = array("d", [self.rank if error else self.size, least]), array("d", [0.0, 0.0])
        self.wait_quietly(self.comm.Iallreduce(mine, first, op=MPI.MIN))
        if first[0] < self.size:
            message = self.comm.bcast(error, root=int(first[0]))
            if unexpected is not None:
                raise unexpected
            raise UsageError(message)
        return first[1]

    def attempt(self, step: Callable[[], T]) -> tuple[T | None, str | None, Exception | None]:
        """Run a start-up step on this rank and catch any way out of it, for agree():
        (its value, the one-line error, the unexpected exception to re-raise after agreeing).
        A UsageError is its message; SystemExit, KeyboardInterrupt, ... are a start-up failure
        (one line, exit 2 everywhere), so no rank leaves the others waiting for it."""
        try:
            return step(), None, None
        except UsageError as exc:
            return None, str(exc), None
        except BaseException as exc:
            error = f"rank {self.rank} on {self.host}: start-up failed: {exception_line(exc)}"
            return None, error, exc if isinstance(exc, Exception) else None

    def agree_on(self, step: Callable[[], T] | None) -> T | None:
        """Collective: run step on this rank (None: nothing to do here), then agree on any way
        out of it (attempt, agree)."""
        value, error, unexpected = self.attempt(step) if step else (None, None, None)
        self.agree(error, unexpected)
        return value

    def poll(self, source: int, tag: int, status: MPI.Status | None = None,
             max_pause: float = MAX_PAUSE) -> None:
        """Return once a message from source with tag is waiting, without spinning for long.

        A blocked MPI receive may spin a core for as long as it waits (a master waiting on
        30-second tasks, for hours). This probes for up to SPIN seconds — in a busy run the
        next message arrives within that, so the hot path does not sleep — then sleeps with
        backoff capped at MAX_PAUSE, which bounds the extra latency of a rank that was idle
        (0.2% of a 0.1 s task) and its CPU use while idle (a few per cent); ranks that may wait
        long (parallel tasks' idle members) pass a longer max_pause. Measured on 2
        cores, 1 master + 1 worker, no-op tasks: blocking receives 250k tasks/s; SPIN = 1 ms
        125k; SPIN = 0.1 ms 30k (waits there often outlast 0.1 ms, and a sleep costs 60 us).
        """
        iprobe = self.comm.Iprobe
        if iprobe(source, tag, status):
            return
        until = time.perf_counter() + SPIN
        while time.perf_counter() < until:
            if iprobe(source, tag, status):
                return
        poll_until(lambda: iprobe(source, tag, status) or None, max_pause)

    def wait_quietly(self, request: MPI.Request) -> None:
        """Wait for a non-blocking collective, sleeping with backoff so idle ranks leave the CPU."""
        poll_until(lambda: request.Test() or None, COLLECTIVE_PAUSE)

    def from_rank_0(self, value: T, tag: int) -> T:
        """Collective: rank 0's small value on every rank, sent to each in one message while the
        others wait quietly for it. A broadcast's tree needs every rank awake at each of its
        rounds: waiting for rank 0's checks in a barrier polled every 1 ms stole rank 0's CPU
        on an oversubscribed node, and every 10 ms cost 10 ms a round. Small: rank 0 sends
        size - 1 copies, so a large value (ids, modules' code) goes by barrier() and bcast."""
        if self.rank == 0:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            MPI.Request.Waitall([self.comm.Isend([data, MPI.BYTE], dest=r, tag=tag)
                                 for r in range(1, self.size)])
            return value
        status = MPI.Status()
        self.poll(0, tag, status, QUIET_PAUSE)
        data = bytearray(status.Get_count(MPI.BYTE))
        self.comm.Recv([data, MPI.BYTE], source=0, tag=tag)
        return pickle.loads(data)

    def barrier(self) -> None:
        """A barrier that does not busy-poll (MPI_Barrier may spin in some MPI libraries)."""
        self.wait_quietly(self.comm.Ibarrier())

    def abort(self, message: str, code: int) -> None:
        """Print one message and end every rank of the job now: from any thread, and from a
        signal handler in the middle of a task (sys.exit there would be the task's failure)."""
        say(message)
        sys.stdout.flush()
        if self.size > 1:
            read_by_launcher((sys.stdout, sys.stderr), ABORT_DRAIN)
            self.comm.Abort(code)
        os._exit(code)


ABORT_DRAIN = 1.0   # longest wait for the launcher to read a rank's last words before it aborts


def read_by_launcher(streams: tuple, seconds: float) -> None:
    """Wait until whoever reads these streams' pipes (mpiexec's daemon) has read all this
    process wrote, or `seconds`: MPICH's launcher kills its daemons at MPI_Abort, and what they
    had not read yet (the one line saying why) was lost. Streams that are not pipes are skipped."""
    import fcntl
    import stat
    import struct
    import termios

    fds = []
    for stream in streams:
        try:
            fd = stream.fileno()
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fds.append(fd)
        except (AttributeError, OSError, ValueError):
            pass
    deadline = time.monotonic() + seconds
    backoff = Backoff(QUIET_PAUSE)
    while fds and time.monotonic() < deadline:
        fds = [fd for fd in fds
               if struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]]
        if fds:
            backoff.sleep()
