"""Stopping early: signals, walltime and failure limits store everything and resume."""
import os
import signal
import subprocess
import time

import h5py
import pytest

from mtcmpi.errors import EXIT_STOPPED
from tests.helpers import kill_session, launcher, mtcmpi, start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def start_mtcmpi(args, ranks=3, **options):
    """`mpiexec -n ranks python -m mtcmpi ARGS` in a session of its own, output piped."""
    return start(ranks, ["-m", "mtcmpi", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)


def signal_session(sid: int, sig: int) -> None:
    """Signal every process of the job, as a batch system does (ranks have their own groups)."""
    kill_session(sid, sig)


# MPICH's mpiexec (Hydra) dies of SIGUSR2 and takes the ranks with it (README, fault table)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]
                         + ([signal.SIGUSR2] if launcher() == "openmpi" else []))
def test_a_signal_stops_handing_out_work_stores_everything_and_the_rerun_resumes(tmp_path, sig):
    out = str(tmp_path / "r.h5")
    args = ["run", "kernels.sleep:task", "--count", "40", "--out", out]
    job = start_mtcmpi(args)
    time.sleep(3.0)
    signal_session(job.pid, sig)
    stdout, stderr = job.communicate(timeout=60)
    assert f"stopped early: signal {signal.Signals(sig).name}" in stdout, stdout + stderr
    with h5py.File(out) as f:
        status = f["tasks"]["status"][:]
    done = int((status == 1).sum())
    assert 0 < done < 40 and set(status.tolist()) <= {0, 1}
    again = mtcmpi(args, ranks=3)
    assert again.returncode == 0 and f"resumed: {done} tasks were done" in again.stdout


def test_a_warning_during_start_up_stops_before_the_first_task_and_exits_75(tmp_path):
    """1.5 s after launch the ranks are starting MPI (the signal is remembered by catch_early)
    or importing the slow task module (caught by the Stop): no rank dies of it. (Earlier, while
    Python itself starts, a signal still kills: nothing of mtcmpi runs yet.)"""
    (tmp_path / "slowmodel.py").write_text("import time\ntime.sleep(3.0)\n\ndef f(x):\n    return x\n")
    out = str(tmp_path / "r.h5")
    job = start_mtcmpi(["run", "slowmodel:f", "--count", "6", "--out", out],
                       env={"PYTHONPATH": str(tmp_path)}, cwd=str(tmp_path))
    time.sleep(1.5)
    signal_session(job.pid, signal.SIGUSR1)
    stdout, stderr = job.communicate(timeout=60)
    assert job.returncode == EXIT_STOPPED, stdout + stderr
    assert "stopped early: signal SIGUSR1" in stdout and "0 ok" in stdout
    assert "Traceback" not in stderr and "exited on signal" not in stderr


def test_walltime_starts_no_task_that_cannot_finish(tmp_path):
    proc = mtcmpi(["run", "kernels.sleep:task", "--count", "40", "--walltime", "0:00:03",
                   "--grace", "1"], ranks=3)
    assert proc.returncode == EXIT_STOPPED
    assert "stopped early: walltime" in proc.stdout and "tasks not run" in proc.stdout


@pytest.mark.parametrize("flag", [["--fail-fast"], ["--max-failures", "2"]])
def test_failure_limits_stop_the_run_with_exit_1(flag):
    proc = mtcmpi(["run", "tests.tasks_for_tests:maybe_fail", "--count", "200", "--chunk", "1",
                   "--schedule", "dynamic", *flag], ranks=3)
    assert proc.returncode == 1
    assert "--max-failures" in proc.stdout and "not run" in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["--walltime", "soon"], "--walltime 'soon' is not HH:MM:SS"),
    (["--grace", "-1"], "--grace must be >= 0"),
    (["--max-failures", "0"], "--max-failures must be >= 1"),
])
def test_bad_limits(args, words):
    proc = mtcmpi(["run", "tests.tasks_for_tests:square", "--count", "3", *args], ranks=2)
    assert proc.returncode == 2 and words in proc.stderr


def test_timeout_kills_a_command_and_its_children(tmp_path):
    (tmp_path / "tasks.txt").write_text("true\nsleep 100.0417\nexit 4\n")   # a sleep only this test runs
    t0 = time.monotonic()
    proc = mtcmpi(["run", "--taskfile", str(tmp_path / "tasks.txt"), "--timeout", "1"], ranks=2)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 1 and "TaskTimeout x1" in proc.stdout and "CommandFailed x1" in proc.stdout
    for _ in range(50):   # killed at once; give the kernel a moment to reap it
        if "sleep 100.0417" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the timed-out command is still running")


def test_walltime_is_read_from_slurm_when_it_tells(tmp_path, monkeypatch):
    """A stand-in squeue on PATH answers with the job's end time, 4 s from now."""
    import datetime
    end = (datetime.datetime.now() + datetime.timedelta(seconds=4)).isoformat(timespec="seconds")
    (tmp_path / "squeue").write_text(f"#!/bin/sh\necho {end}\n")
    (tmp_path / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    proc = mtcmpi(["run", "kernels.sleep:task", "--count", "60", "--grace", "1"], ranks=3)
    assert proc.returncode == EXIT_STOPPED and "stopped early: walltime" in proc.stdout
