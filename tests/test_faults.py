"""Stop and TaskLog.run in one process: every way out of a task is a failed task, a stop
signal wakes the listeners and ends the run --grace later, a task cannot turn stopping off."""
import asyncio
import os
import signal
import threading
import time

import pytest

from mtcmpi.options import RunOptions

from mtcmpi.errors import UsageError
from mtcmpi import faults
from mtcmpi.faults import CHECK_EVERY, REPEAT, SIGNALS, Stop, catch_early, parse_walltime
from mtcmpi.tasklog import FAILED, OK, TaskLog
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(30, method="thread")   # the Stop's signal handlers are the test's


class Custom(BaseException):
    pass


def raising(exc):
    def task(x):
        if x == 1:
            raise exc
        return x
    return task


@pytest.fixture
def handlers():
    """Put back this process's signal handlers after the test."""
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3), asyncio.CancelledError(),
                                 GeneratorExit(), Custom("odd")])
def test_every_way_out_of_a_task_is_a_failed_task_and_the_run_goes_on(exc):
    log = TaskLog(0, "h", 1)
    n, failed, _ = log.run([(0, 0), (1, 1), (2, 2)], raising(exc), time.time, Stop())
    assert (n, failed) == (3, 1) and list(log.status) == [OK, FAILED, OK]
    assert log.failures[1].type == type(exc).__name__ and log.results == {0: 0, 2: 2}


def test_an_early_signal_counts_at_install_and_the_run_ends_grace_later_even_in_start_up(handlers):
    catch_early()
    os.kill(os.getpid(), signal.SIGUSR2)        # before the run: remembered, not fatal
    ended = []
    stop = Stop(grace=0.2)
    stop.expired = ended.append
    stop.install()
    assert stop.reason == "signal SIGUSR2"
    wait_until(lambda: ended, 10, "the watchdog")   # no task ran, no engine: the watchdog ends it
    assert ended == ["still running 0.2 s after signal SIGUSR2 (--grace)"]
    stop.uninstall()


def test_a_signal_before_any_run_ends_the_job_grace_later(handlers):
    """catch_early's Stop: a rank frozen before the run begins must not keep the others
    waiting for it forever (its own end, here recorded, is end_process: MPI_Abort)."""
    catch_early(0.1)
    ended = []
    faults._early.expired = ended.append
    os.kill(os.getpid(), signal.SIGTERM)
    wait_until(lambda: ended, 10, "the watchdog")
    assert ended == ["still running 0.1 s after signal SIGTERM (--grace)"]
    faults._early.uninstall()
    faults._early = None


def test_a_signal_wakes_the_listeners_at_once_repeats_are_one_a_second_ctrl_c_ends_the_run(handlers):
    heard, ended = [], []
    stop = Stop(grace=30.0)
    stop.listeners.append(lambda: heard.append(time.time()))
    stop.expired = ended.append
    stop.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.reason == "signal SIGTERM" and len(heard) == 1 and stop.watchdog.is_alive()
    os.kill(os.getpid(), signal.SIGINT)          # within REPEAT: the same stop, not a second
    assert len(heard) == 1
    assert ended == []
    stop.signalled -= REPEAT + 0.1               # as if the first came more than REPEAT ago
    os.kill(os.getpid(), signal.SIGINT)
    assert ended == ["a second Ctrl-C"]
    stop.quiet()                                 # the engine is done: signals change nothing
    os.kill(os.getpid(), signal.SIGINT)
    assert ended == ["a second Ctrl-C"] and stop.watchdog.finished.is_set()
    stop.uninstall()


def test_grace_0_ends_the_run_at_once(handlers):
    ended = threading.Event()
    stop = Stop(grace=0)
    stop.expired = lambda why: ended.set()
    stop.install()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert ended.wait(2)
    stop.uninstall()


@pytest.mark.parametrize("grace", [float("nan"), float("inf"), -1.0])
def test_grace_must_be_finite_and_not_negative(grace):
    with pytest.raises(UsageError, match="--grace must be >= 0 and finite"):
        RunOptions(grace=grace)


@pytest.mark.parametrize("text", ["nan", "inf", "1:nan", "-inf", "1e400"])
def test_walltime_must_be_finite(text):
    with pytest.raises(UsageError, match="is not HH:MM:SS"):
        parse_walltime(text)


def test_a_task_that_ignores_sigterm_gets_mtcmpi_s_handler_put_back(handlers, capsys):
    stop = Stop()
    stop.install()
    now = [0.0]

    def ignores(x):
        if x == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        now[0] += CHECK_EVERY / 2
        return x

    TaskLog(0, "h", 1).run([(i, i) for i in range(4)], ignores, lambda: now[0], stop)
    assert signal.getsignal(signal.SIGTERM) == stop.on_signal
    assert "a task replaced the handler of SIGTERM" in capsys.readouterr().err
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.reason == "signal SIGTERM"
    stop.uninstall()
