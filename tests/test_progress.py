"""Progress display: plain lines at an interval in a log, a tqdm bar on a terminal, silence when
quiet, and an update() cheap enough to call after every message. A fake clock: no sleeping."""
import io
import time

import pytest

from mtcmpi.progress import Progress, duration

pytestmark = pytest.mark.timeout(120)


class Clock:
    """A clock that moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_one_plain_line_per_interval_and_a_final_one():
    clock, log = Clock(), io.StringIO()
    progress = Progress(100, interval=10.0, stream=log, clock=clock)
    for second in range(1, 26):           # 25 s at one update a second: lines at 10 s and 20 s
        clock.now += 1.0
        progress.update(done=4 * second, failed=second // 10, running=3)
    progress.update(done=100, failed=2, running=0)
    progress.close()
    progress.close()
    lines = log.getvalue().splitlines()
    assert lines == ["mtcmpi: 40/100 done (40.0%), 1 failed, 3 running, 4.0 tasks/s, ETA 0:00:15",
                     "mtcmpi: 80/100 done (80.0%), 2 failed, 3 running, 4.0 tasks/s, ETA 0:00:05",
                     "mtcmpi: 100/100 done (100.0%), 2 failed, 0 running, 4.0 tasks/s, took 0:00:25"]
    assert "\r" not in log.getvalue()


def test_log_before_any_task_is_done_has_no_eta():
    clock, log = Clock(), io.StringIO()
    progress = Progress(10, interval=1.0, stream=log, clock=clock)
    clock.now += 5.0
    progress.update(0, 0, 4)
    assert log.getvalue() == "mtcmpi: 0/10 done (0.0%), 0 failed, 4 running, 0.0 tasks/s, ETA ?\n"


def test_quiet_prints_nothing():
    clock, log, terminal = Clock(), io.StringIO(), Terminal()
    for stream in (log, terminal):
        progress = Progress(10, quiet=True, interval=0.0, stream=stream, clock=clock)
        for done in range(11):
            clock.now += 100.0
            progress.update(done, 0, 1)
        progress.close()
    assert log.getvalue() == terminal.getvalue() == ""


def test_terminal_gets_a_tqdm_bar_with_failed_and_running():
    clock, terminal = Clock(), Terminal()
    progress = Progress(50, stream=terminal, clock=clock)
    for done in range(0, 51, 5):
        clock.now += 1.0
        progress.update(done, failed=done // 25, running=7 if done < 50 else 0)
    progress.close()
    out = terminal.getvalue()
    assert "\r" in out and "mtcmpi:" in out and "task/s" in out
    assert "25/50" in out and "failed=1, running=7" in out
    assert "50/50" in out and "failed=2, running=0" in out


def test_terminal_redraws_are_throttled():
    clock, terminal = Clock(), Terminal()
    progress = Progress(1000, stream=terminal, clock=clock)
    for done in range(1000):
        progress.update(done, 0, 1)
    assert terminal.getvalue().count("\r") < 20
    progress.close()


def test_update_is_cheap_with_the_real_clock():
    progress = Progress(10**6, interval=3600.0, stream=io.StringIO())
    update = progress.update
    t0 = time.perf_counter()
    for i in range(100_000):
        update(i, 0, 8)
    assert time.perf_counter() - t0 < 0.5


def test_duration():
    assert duration(21.4) == "0:00:21"
    assert duration(3 * 86400 + 3661) == "3 days, 1:01:01"
