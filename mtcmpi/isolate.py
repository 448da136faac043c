"""Per-task timeouts and crash isolation: each task runs in a child process of its rank.

A task stuck in C code (signal.pause(), a long numpy call) cannot be interrupted from inside
its own process, and a task that segfaults or is killed by the OOM killer takes its rank, and
with it the whole MPI job, down. So under --timeout or --isolate a rank runs its tasks in one
child process, started once and reused task after task: a task costs an IPC round trip, not a
process start. The parent sends each payload over a socket pair and waits in poll(), which
does not spin. At the limit it SIGKILLs the child's process group (the child leads its own, so
the processes a task started die with it) and the task fails with TaskTimeout; a child that
dies fails its task with TaskCrashed ("crashed, signal 11 (Segmentation fault)", "crashed,
exit status 3"). Either way the next task gets a new child. A task's exception comes back as
itself when it pickles (a Skipped still skips, a CommandFailed keeps its exit code), else as a
RemoteError subclass of the same name, so the summary groups failures alike; a note on it
carries the traceback from the child. Results come back pickled; one that does not pickle
fails its task with UnpicklableResult.

Why os.fork() after MPI_Init. The child is forked after the task function has been resolved,
so it inherits the function as it is: a lambda, a closure, a callable passed to the API, a
CommandRunner, with nothing pickled and nothing imported again. The alternatives start a fresh
interpreter (multiprocessing 'spawn', or a 'forkserver', itself spawned) that must import the
function by name. Measured under mpiexec here, such a child that imports mpi4py (as a module
that imports mtcmpi, or the user's MPI code, does) inherits the rank's OMPI_* environment,
fails in orte_init and leaves mpiexec hung; and a fresh Python takes 0.09 s to import
mtcmpi.tasks, 0.19 s numpy, 0.59 s mpi4py, for every new child. A forked child never calls
MPI, ends only with os._exit (no atexit handlers, so no MPI_Finalize), resets the fatal-signal
handlers Open MPI installs (else each crash prints Open MPI's backtrace banner), leaves the
stop signals (faults.SIGNALS) to its rank, which finishes the task or kills it at
--grace, and gets SIGKILL when its rank dies (PR_SET_PDEATHSIG).
Measured with Open MPI 4.1.4 under `mpiexec -n 2` (pml ob1 with the vader shared-memory BTL,
and with the tcp BTL): ranks whose forked children segfault, _exit, SIGKILL themselves or are
killed at a timeout run point-to-point and collective calls afterwards, with no error and no
warning. Open MPI warns of fork() only when an InfiniBand BTL (openib) is in use, as fork()
can corrupt its registered memory: there, use UCX or a kernel with fork-safe RDMA (Linux 5.12+
with rdma-core 35+), or run without --timeout/--isolate.

Costs on 2 shared cores, Python 3.11, a 45 MB rank (numpy, mpi4py): a no-op task takes 0.6 us
called directly and 26 us through Isolated (1,000 tasks: 0.6 ms against 26 ms), so isolation
suits tasks of a millisecond or more. Forking a new child takes 0.9 ms (median; more for a
rank of many GB, whose page tables are copied). A timeout is seen 1-2 ms after the limit
(poll() counts milliseconds) and the child is killed and reaped in 2-3 ms more; a crashed
task's call returns 4-8 ms after it starts, most of it the child's own exit.

Limits: a task must not use MPI (the child shares the rank's MPI state but is not a rank);
processes a task starts in a new session (start_new_session=True, as command tasks' shells)
are outside the child's group and survive a kill, so command tasks take CommandDeadline
instead of isolation; files a task opened are not flushed when its child is killed or closed
(stdout and stderr are, after every task).
"""
from __future__ import annotations

import ctypes
import faulthandler
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import time
import traceback
import warnings
from contextlib import suppress
from functools import cache
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any, Callable, NamedTuple, NoReturn

from .errors import RemoteError, describe, exception_line, user_frames
from .faults import SIGNALS as STOP_SIGNALS
from .tasklog import TaskCrashed, TaskTimeout
from .tasks import CALL_ONE, invoker, resolve

PEEK = 1.0   # seconds between checks that the child still lives, while its socket stays open
CRASH_SIGNALS = (signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGSEGV)
PR_SET_PDEATHSIG = 1
PRCTL = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform.startswith("linux") else None


class UnpicklableResult(TypeError):
    """A task's return value that cannot be pickled, so it cannot leave the child."""


class Raised(NamedTuple):
    """The child's report of an exception: the exception itself if it pickles, and as text."""

    exc: BaseException | None
    type: str
    message: str
    traceback: str


def timed_out(seconds: float) -> TaskTimeout:
    return TaskTimeout(f"ran longer than --timeout {seconds:g} s and was killed")


def crashed(status: int) -> TaskCrashed:
    """A TaskCrashed naming how the child ended, from its wait status."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        return TaskCrashed(f"crashed, signal {signum} ({signal.strsignal(signum) or 'unknown'})")
    return TaskCrashed(f"crashed, exit status {os.waitstatus_to_exitcode(status)}")


def kill_group(pgid: int) -> None:
    """SIGKILL every process of a process group; one already gone is fine."""
    if pgid <= 0:   # killpg(0) would kill the caller's own group
        raise ValueError(f"not a process group id: {pgid}")
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@cache
def remote_class(name: str) -> type:
    """A RemoteError subclass called `name`, so failures group under the original type name."""
    return type(name, (RemoteError,), {"__module__": __name__})


class Isolated:
    """invoke(payload) run in a child process of this one, with an optional time limit.

    `fn_spec` is the task function or its 'module:function' name, `call` how a payload is
    passed (see tasks.invoker). Use it as TaskLog.run's invoke; close() (or a with-block)
    ends the child.
    """

    def __init__(self, fn_spec: str | Callable, call: str = CALL_ONE, timeout: float | None = None):
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout}")
        self.invoke = invoker(resolve(fn_spec) if isinstance(fn_spec, str) else fn_spec, call)
        self.timeout = timeout
        self.pid = 0   # the child's, 0 when there is none
        self.conn: Connection | None = None
        self.start()

    def __enter__(self) -> "Isolated":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __call__(self, payload: Any) -> Any:
        if not self.pid:
            self.start()
        try:
            self.conn.send(payload)
        except BrokenPipeError:   # the child died after its last answer: not this task's doing
            self.stop()
            self.start()
            self.conn.send(payload)
        try:
            reply = self.receive()
        except BaseException:
            self.close()   # interrupted: abandon the task
            raise
        if isinstance(reply, Raised):
            raise rebuilt(reply, self.pid)
        return reply

    def receive(self) -> Any:
        """The child's answer; kills it and raises TaskTimeout or TaskCrashed instead if due."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not self.conn.poll(PEEK if deadline is None else
                                 max(0.0, min(PEEK, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                self.stop()
                raise timed_out(self.timeout)
            if self.exited():   # dead, though a process it forked still holds the socket
                raise crashed(self.stop())
        try:
            return self.conn.recv()
        except (EOFError, ConnectionError):   # the socket closed: the child died
            raise crashed(self.stop()) from None

    def exited(self) -> bool:
        """Whether the child has ended, without reaping it (its pid keeps naming its group)."""
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def start(self) -> None:
        """Fork the child; it serves tasks until its socket closes."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()   # else the child inherits and repeats unwritten output
        parent_end, child_end = Pipe()
        parent = os.getpid()
        with warnings.catch_warnings():   # Python 3.12+ warns of fork() beside threads, and
            warnings.simplefilter("ignore", DeprecationWarning)   # Open MPI runs its own
            pid = os.fork()
        if pid == 0:
            parent_end.close()
            child_main(child_end, self.invoke, parent)
        child_end.close()
        with suppress(OSError):   # also set in the child: whichever runs first, killpg works
            os.setpgid(pid, pid)
        self.pid, self.conn = pid, parent_end

    def stop(self) -> int:
        """Kill the child's process group, reap the child; returns its wait status."""
        pid, self.pid = self.pid, 0
        self.conn.close()
        kill_group(pid)
        return os.waitpid(pid, 0)[1]

    def close(self) -> None:
        """End the child and every process of its group; calling it again does nothing."""
        if self.pid:
            self.stop()


def rebuilt(raised: Raised, pid: int) -> BaseException:
    """The exception to raise in the parent for a task's exception in child pid."""
    exc = raised.exc
    if exc is None:
        exc = remote_class(raised.type)(raised.message)
    if raised.traceback:
        exc.__notes__ = [f"in the task's isolated process (pid {pid}):\n{raised.traceback.rstrip()}"]
    return exc


def child_main(conn: Connection, invoke: Callable[[Any], Any], parent: int) -> NoReturn:
    """The forked child: serve tasks, then leave without atexit handlers (no MPI_Finalize)."""
    code = 1
    try:
        become_child(parent)
        child_loop(conn, invoke)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):
                stream.flush()
        os._exit(code)


def become_child(parent: int) -> None:
    """Lead a process group, crash plainly on fatal signals, leave stop signals to the rank,
    die with the parent."""
    os.setpgid(0, 0)
    for signum in CRASH_SIGNALS:   # Open MPI's handlers print a backtrace banner per crash
        signal.signal(signum, signal.SIG_DFL)
    for signum in STOP_SIGNALS:    # the rank finishes the task or kills it at --grace; a Python
        signal.signal(signum, ignore)   # handler, unlike SIG_IGN, is not inherited across exec
    if faulthandler.is_enabled():
        faulthandler.enable()      # the user asked for Python tracebacks of crashes: keep them
    forbid_mpi()
    if PRCTL is not None:
        PRCTL(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL))
    if os.getppid() != parent:     # the parent died before prctl took effect
        os._exit(1)


class NoMPI:
    """Stands for MPI.COMM_WORLD / COMM_SELF in a forked child: its rank and size still
    answer, any communication raises (in the child it would hang or corrupt its rank's MPI)."""

    LOCAL = ("rank", "size", "Get_rank", "Get_size", "name", "Get_name")

    def __init__(self, name: str, comm: Any):
        self._name = name
        for attr in self.LOCAL:
            setattr(self, attr, getattr(comm, attr))

    def __getattr__(self, attr: str) -> NoReturn:
        raise RuntimeError(f"MPI.{self._name}.{attr}: a task under --timeout or --isolate runs "
                           "in a child process of its rank, which must not use MPI; the other "
                           "ranks are busy with their own tasks in any case")


def forbid_mpi() -> None:
    """In a forked child, make the usual way into MPI (MPI.COMM_WORLD, MPI.COMM_SELF) raise."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        for name in ("COMM_WORLD", "COMM_SELF"):
            setattr(mpi, name, NoMPI(name, getattr(mpi, name)))


def ignore(signum: int, frame: Any) -> None:
    """A signal handler that does nothing."""


def child_loop(conn: Connection, invoke: Callable[[Any], Any]) -> None:
    """The isolated child's loop: answer each payload with its result or a Raised, until the parent closes the socket."""
    while True:
        try:
            payload = conn.recv()
        except EOFError:
            return
        answer(conn, invoke, payload)
        sys.stdout.flush()
        sys.stderr.flush()


def answer(conn: Connection, invoke: Callable[[Any], Any], payload: Any) -> None:
    try:
        value = invoke(payload)
    except BaseException as exc:
        conn.send(raised(exc))
        return
    try:
        conn.send(value)
    except Exception as exc:
        conn.send(raised(UnpicklableResult(f"the task returned a {type(value).__name__}, which "
                                           f"cannot be pickled to leave its isolated process: "
                                           f"{exception_line(exc)}")))


def raised(exc: BaseException) -> Raised:
    """An exception as the child reports it, with its traceback without mtcmpi's own frames;
    no text when there are no other frames and the exception travels as itself (with its notes)."""
    itself = travelling(exc)
    described = describe(exc)
    text = "" if user_frames(exc.__traceback__) is None and itself is not None else described.traceback
    return Raised(itself, described.type, described.message, text)


def travelling(exc: BaseException) -> BaseException | None:
    """exc if it survives a pickle round trip as its own type and is a task failure, else None
    (a KeyboardInterrupt raised again in the parent would stop the rank)."""
    if not isinstance(exc, (Exception, SystemExit)):
        return None
    try:
        return exc if type(pickle.loads(pickle.dumps(exc))) is type(exc) else None
    except Exception:
        return None


class CommandDeadline:
    """--timeout for one command task (CommandRunner), whose shell leads its own session, so
    no isolation is needed: at the limit the shell's process group is killed and the task
    fails with TaskTimeout. Start it when the command starts; poll its pipes with left_ms()
    and call expire() when the poll times out; wait for the shell with wait()."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        """Seconds until the limit (0 once passed); None without a limit."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def left_ms(self) -> int | None:
        """left() in milliseconds, rounded up, for select.poll: it returns empty only after the limit."""
        left = self.left()
        return None if left is None else math.ceil(left * 1000)

    def expire(self, pgid: int) -> NoReturn:
        """Kill the command's process group; fail the task as timed out."""
        kill_group(pgid)
        raise timed_out(self.seconds)

    def wait(self, proc: subprocess.Popen) -> int:
        """proc's exit status, or kill its group at the limit. Waits on a pidfd (Linux 5.3+):
        Popen.wait(timeout), the fallback, sleeps up to 50 ms between looks."""
        if self.at is None:
            return proc.wait()
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            try:
                return proc.wait(self.left())
            except subprocess.TimeoutExpired:
                self.expire(proc.pid)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(self.left_ms()):
                self.expire(proc.pid)
        finally:
            os.close(fd)
        return proc.wait()
