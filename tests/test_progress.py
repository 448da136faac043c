"""Progress display: plain lines at an interval in a log, a tqdm bar on a terminal, silence when
quiet, and an update() cheap enough to call after every message. A fake clock: no sleeping."""
import io
import shlex
import subprocess
import time

import pytest

from mtcmpi.progress import Progress, duration
from tests.helpers import ROOT, command, environment, mtcmpi

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
    progress = Progress(interval=10.0, stream=log, clock=clock).start(100)
    for second in range(1, 26):           # 25 s at one update a second: lines at 10 s and 20 s
        clock.now += 1.0
        progress.update(done=4 * second, failed=second // 10, running=3)
    progress.update(done=100, failed=2, running=0)
    progress.close(100, 2)
    progress.close(100, 2)
    lines = log.getvalue().splitlines()
    assert lines == ["mtcmpi: 40/100 done (40.0%), 1 failed, 3 running, 4.0 tasks/s, ETA 0:00:15",
                     "mtcmpi: 80/100 done (80.0%), 2 failed, 3 running, 4.0 tasks/s, ETA 0:00:05",
                     "mtcmpi: 100/100 done (100.0%), 2 failed, 0 running, 4.0 tasks/s, took 0:00:25"]
    assert "\r" not in log.getvalue()


def test_log_before_any_task_is_done_has_no_eta():
    clock, log = Clock(), io.StringIO()
    progress = Progress(interval=1.0, stream=log, clock=clock).start(10)
    clock.now += 5.0
    progress.update(0, 0, 4)
    assert log.getvalue() == "mtcmpi: 0/10 done (0.0%), 0 failed, 4 running, 0.0 tasks/s, ETA ?\n"


def test_quiet_prints_nothing():
    clock, log, terminal = Clock(), io.StringIO(), Terminal()
    for stream in (log, terminal):
        progress = Progress(quiet=True, interval=0.0, stream=stream, clock=clock).start(10)
        for done in range(11):
            clock.now += 100.0
            progress.update(done, 0, 1)
        progress.close(10, 0)
    assert log.getvalue() == terminal.getvalue() == ""


def test_terminal_gets_a_tqdm_bar_with_failed_and_running():
    clock, terminal = Clock(), Terminal()
    progress = Progress(stream=terminal, clock=clock).start(50)
    for done in range(0, 51, 5):
        clock.now += 1.0
        progress.update(done, failed=done // 25, running=7 if done < 50 else 0)
    progress.close(50, 2)
    out = terminal.getvalue()
    assert "\r" in out and "mtcmpi:" in out and "task/s" in out
    assert "25/50" in out and "failed=1, running=7" in out
    assert "50/50" in out and "failed=2, running=0" in out


def test_terminal_redraws_are_throttled():
    clock, terminal = Clock(), Terminal()
    progress = Progress(stream=terminal, clock=clock).start(1000)
    for done in range(1000):
        progress.update(done, 0, 1)
    assert terminal.getvalue().count("\r") < 20
    progress.close(1000, 0)


def test_update_is_cheap_with_the_real_clock():
    progress = Progress(interval=3600.0, stream=io.StringIO()).start(10**6)
    update = progress.update
    t0 = time.perf_counter()
    for i in range(100_000):
        update(i, 0, 8)
    assert time.perf_counter() - t0 < 0.5


def test_duration():
    assert duration(21.4) == "0:00:21"
    assert duration(3 * 86400 + 3661) == "3 days, 1:01:01"


@pytest.mark.e2e
@pytest.mark.parametrize("schedule,label", [("dynamic", ""), ("static", "rank 0's share: ")])
def test_a_run_in_a_log_prints_plain_status_lines_from_rank_0_only(schedule, label):
    proc = mtcmpi(["run", "kernels.sleep:task", "--count", "18", "--schedule", schedule,
                   "--progress-interval", "0.3"], ranks=3)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) >= 3 and "\r" not in proc.stderr
    assert all(line.startswith(f"mtcmpi: {label}") for line in lines)
    final = "6/6" if schedule == "static" else "18/18"
    assert lines[-1].startswith(f"mtcmpi: {label}{final} done (100.0%), 0 failed, 0 running")
    assert sum("took" in line for line in lines) == 1


@pytest.mark.e2e
def test_quiet_run_prints_only_the_summary():
    proc = mtcmpi(["run", "kernels.sleep:task", "--count", "6", "--quiet", "--progress-interval", "0.1"])
    assert proc.returncode == 0 and proc.stderr == ""
    assert "6 ok, 0 failed" in proc.stdout


@pytest.mark.e2e
def test_mpiexec_at_a_terminal_shows_a_bar():
    """Open MPI pipes a rank's stderr to mpiexec: the bar must follow mpiexec's terminal."""
    job = shlex.join(command(3, ["-m", "mtcmpi", "run", "kernels.sleep:task", "--count", "12"]))
    proc = subprocess.run(["script", "-qec", job, "/dev/null"], capture_output=True,
                          timeout=60, cwd=ROOT, env=environment(), start_new_session=True)
    out = proc.stdout.decode(errors="replace")   # bytes: text mode would turn \r into \n
    assert proc.returncode == 0, out
    assert "\r" in out and "task/s" in out and "12/12" in out
    assert "done (" not in out   # no plain status lines
