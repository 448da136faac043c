"""Tests of mtcmpi.isolate: tasks in a forked child, killed at --timeout, crashes as failures."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mtcmpi.faults import Stop
from mtcmpi.isolate import CommandDeadline, Isolated, UnpicklableResult
from mtcmpi.tasklog import (CRASHED, FAILED, OK, SKIPPED, TIMEOUT, Skipped, TaskCrashed, TaskLog,
                            TaskTimeout)
from mtcmpi.tasks import CALL_STAR
from tests.helpers import ROOT, run

pytestmark = pytest.mark.timeout(120)

LIBC = ctypes.CDLL(None)


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie does not: in a container nobody may reap an orphan)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def gone(pid: int, within: float = 5.0) -> bool:
    until = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > until:
            return False
        time.sleep(0.01)
    return True


def hang(how: str) -> None:
    """Never return, the ways a real task gets stuck."""
    if how == "python":
        time.sleep(1000)
    elif how == "pause":
        signal.pause()
    elif how == "c-sleep":
        LIBC.sleep(1000)
    else:
        sum(range(10 ** 12))   # a busy loop inside one C call


def crash(how: str) -> None:
    if how == "segfault":
        ctypes.string_at(0)
    elif how == "exit":
        os._exit(3)
    else:
        os.kill(os.getpid(), signal.SIGKILL)


class Stubborn(Exception):
    """An exception that does not unpickle (its __init__ wants two arguments)."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def fails(x):
    raise ValueError(f"x={x} is unlucky")


def fails_stubbornly(x):
    raise Stubborn(x, "more")


def start_sleep_and_hang(path: str) -> None:
    """Start a grandchild, tell its pid, hang."""
    proc = subprocess.Popen(["sleep", "1000"])
    with open(path, "w") as f:
        f.write(str(proc.pid))
    signal.pause()


def start_sleep(path: str) -> int:
    """Start a grandchild and return, leaving it running."""
    proc = subprocess.Popen(["sleep", "1000"])
    with open(path, "w") as f:
        f.write(str(proc.pid))
    return proc.pid


def run_logged(iso: Isolated, payloads: list) -> TaskLog:
    log = TaskLog(0, "host", os.getpid())
    log.run(enumerate(payloads), iso, time.time, Stop())
    return log


@pytest.mark.parametrize("how", ["python", "pause", "c-sleep", "c-busy"])
def test_timeout_kills_a_task_stuck_in_python_or_c(how):
    with Isolated(hang, timeout=0.3) as iso:
        t0 = time.monotonic()
        with pytest.raises(TaskTimeout, match=r"^ran longer than --timeout 0.3 s and was killed$"):
            iso(how)
        assert 0.3 <= time.monotonic() - t0 < 3


def test_the_next_task_after_a_timeout_runs_in_a_fresh_child():
    with Isolated(lambda x: hang(x) if x else os.getpid(), timeout=0.3) as iso:
        first = iso.pid
        with pytest.raises(TaskTimeout):
            iso("pause")
        assert gone(first)
        assert iso(None) == iso.pid != first
        assert iso(None) == iso.pid   # and that child stays for the tasks after


@pytest.mark.parametrize("how, message", [
    ("segfault", "crashed, signal 11 (Segmentation fault)"),
    ("exit", "crashed, exit status 3"),
    ("kill", "crashed, signal 9 (Killed)"),
])
def test_a_crash_is_a_failed_task_and_the_next_one_runs(how, message):
    with Isolated(lambda x: crash(x) if x else "fine") as iso:
        with pytest.raises(TaskCrashed) as info:
            iso(how)
        assert str(info.value) == message
        assert iso(None) == "fine"


def mixed(x):
    """Hang, crash or fail for some payloads, return the others."""
    if x == "hang":
        hang("pause")
    if x == "segfault":
        crash(x)
    return fails(x) if x == 5 else x


def test_the_task_log_records_timeouts_crashes_and_failures_and_goes_on():
    with Isolated(mixed, timeout=0.3) as iso:
        log = run_logged(iso, [1, "hang", 2, "segfault", 3, 5, 4])
    assert list(log.status) == [OK, TIMEOUT, OK, CRASHED, OK, FAILED, OK]
    assert log.results == {0: 1, 2: 2, 4: 3, 6: 4}
    assert log.failures[3].type == "TaskCrashed" and log.failures[1].type == "TaskTimeout"


def test_an_exception_keeps_its_type_and_its_traceback_from_the_child():
    with Isolated(fails) as iso:
        log = run_logged(iso, [7])
    failure = log.failures[0]
    assert (failure.type, failure.message) == ("ValueError", "x=7 is unlucky")
    assert "in the task's isolated process (pid" in failure.traceback
    assert "in fails" in failure.traceback
    assert 'raise ValueError(f"x={x} is unlucky")' in failure.traceback


def test_an_exception_that_does_not_pickle_keeps_its_type_name_and_message():
    with Isolated(fails_stubbornly) as iso:
        log = run_logged(iso, [7])
    failure = log.failures[0]
    assert (failure.type, failure.message) == ("Stubborn", "7 and more")
    assert "in fails_stubbornly" in failure.traceback


def test_skipped_and_statuses_travel_as_themselves():
    def task(x):
        if x == "skip":
            raise Skipped("done before")
        raise TaskTimeout("the task's own limit")
    with Isolated(task) as iso:
        log = run_logged(iso, ["skip", "other"])
    assert list(log.status) == [SKIPPED, TIMEOUT]


def test_a_result_that_does_not_pickle_fails_the_task_and_the_child_stays():
    with Isolated(lambda x: (lambda: x) if x else os.getpid()) as iso:
        pid = iso.pid
        with pytest.raises(UnpicklableResult, match="returned a function, which cannot be pickled"):
            iso(1)
        assert iso(0) == pid


def test_the_function_is_inherited_not_pickled_and_payloads_are_spread():
    offset = 10
    with Isolated(lambda a, b: a * b + offset, CALL_STAR) as iso:
        assert iso((3, 4)) == 22
    with Isolated("tests.tasks_for_tests:add", CALL_STAR) as iso:
        assert iso((3, 4)) == 7


def test_processes_the_task_started_die_with_it_at_the_timeout(tmp_path):
    path = str(tmp_path / "pid")
    with Isolated(start_sleep_and_hang, timeout=1.0) as iso:
        with pytest.raises(TaskTimeout):
            iso(path)
        grandchild = int(open(path).read())
        assert gone(grandchild)


def fork_and_exit(x) -> None:
    """Leave a forked process holding the child's socket open, then end the child."""
    if os.fork() == 0:
        signal.pause()
    os._exit(3)


def test_a_crash_is_seen_when_a_forked_process_keeps_the_socket_open():
    with Isolated(lambda x: fork_and_exit(x) if x else "fine") as iso:
        with pytest.raises(TaskCrashed, match="exit status 3"):
            iso(1)
        assert iso(None) == "fine"


def test_close_leaves_no_process_behind(tmp_path):
    path = str(tmp_path / "pid")
    iso = Isolated(start_sleep)
    child = iso.pid
    grandchild = iso(path)
    assert alive(child) and alive(grandchild)
    iso.close()
    assert gone(child) and gone(grandchild)
    iso.close()   # a second close does nothing


def test_an_interrupted_wait_kills_the_child_and_the_next_task_runs():
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    saved = signal.signal(signal.SIGALRM, interrupt)
    try:
        with Isolated(lambda x: hang(x) if x else "fine") as iso:
            child = iso.pid
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(KeyboardInterrupt):
                iso("pause")
            assert gone(child)
            assert iso(None) == "fine"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, saved)


def test_the_child_leaves_stop_signals_to_its_rank():
    with Isolated(lambda s: time.sleep(s) or "finished") as iso:
        threading.Timer(0.1, os.kill, (iso.pid, signal.SIGTERM)).start()
        assert iso(0.5) == "finished"


def test_the_child_dies_with_its_parent():
    code = ("import os, signal, sys\nfrom mtcmpi.isolate import Isolated\n"
            "iso = Isolated(print)\nprint(iso.pid, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          cwd=ROOT, start_new_session=True)
    assert proc.returncode == -signal.SIGKILL
    assert gone(int(proc.stdout.split()[0]))


def test_command_deadline_kills_the_commands_process_group():
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 1000 & echo $!; wait"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    with proc:
        grandchild = int(proc.stdout.readline())
        deadline = CommandDeadline(0.3)
        with pytest.raises(TaskTimeout, match="--timeout 0.3 s"):
            deadline.wait(proc)
    assert proc.returncode == -signal.SIGKILL and gone(grandchild)


def test_command_deadline_waits_for_a_command_that_ends_in_time():
    for seconds in (None, 10.0):
        deadline = CommandDeadline(seconds)
        with subprocess.Popen(["/bin/sh", "-c", "exit 3"], start_new_session=True) as proc:
            assert deadline.wait(proc) == 3
        assert deadline.left_ms() is None if seconds is None else 0 < deadline.left_ms() <= 10000


MPI_SCRIPT = r"""
import ctypes, signal
from mpi4py import MPI
from mtcmpi.isolate import Isolated
from mtcmpi.tasklog import TaskCrashed, TaskTimeout

def task(x):
    if x == "segfault":
        ctypes.string_at(0)
    if x == "hang":
        signal.pause()
    return 2 * x

comm = MPI.COMM_WORLD
outcomes = []
with Isolated(task, timeout=1.0) as iso:
    for x in [1, "segfault", 2, "hang", 3]:
        try:
            outcomes.append(iso(x))
        except (TaskCrashed, TaskTimeout) as exc:
            outcomes.append(type(exc).__name__)
total = comm.allreduce(sum(v for v in outcomes if isinstance(v, int)))
print(f"rank {comm.Get_rank()}: {outcomes} total {total}", flush=True)
"""


@pytest.mark.e2e
def test_ranks_run_isolated_tasks_and_mpi_works_after_a_crash_and_a_timeout():
    proc = run(2, ["-c", MPI_SCRIPT], timeout=60)
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        assert f"rank {rank}: [2, 'TaskCrashed', 4, 'TaskTimeout', 6] total 24" in proc.stdout
    assert "Process received signal" not in proc.stderr   # Open MPI's crash banner is reset
