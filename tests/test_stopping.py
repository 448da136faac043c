"""Stopping early: signals, walltime and failure limits store everything and resume."""
import os
import signal
import subprocess
import time

import h5py
import pytest

from mtcmpi.errors import EXIT_STOPPED
from tests.helpers import ROOT, end_job, job_processes, launcher, mtcmpi, ranks_of, signal_job, start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


STARTED: list[int] = []   # the jobs this test started (their mpiexec's pid)


@pytest.fixture(autouse=True)
def no_job_outlives_its_test():
    """Whatever way a test ends (an assertion, a timeout), every process of the jobs it
    started ends with it: MPICH's ranks would go on (in sessions of their own) otherwise."""
    yield
    while STARTED:
        end_job(STARTED.pop())


def start_mtcmpi(args, ranks=3, cwd=None, **env):
    """`mpiexec -n ranks python -m mtcmpi ARGS` in a session of its own, output piped; env: extra
    variables of the job; cwd: where it runs, also on PYTHONPATH (task modules written there)."""
    extra = dict(env, PYTHONPATH=cwd) if cwd else env
    job = start(ranks, ["-m", "mtcmpi", *args], extra or None, cwd, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
    STARTED.append(job.pid)
    return job


# MPICH's mpiexec (Hydra) dies of SIGUSR2 and takes the ranks with it (README, fault table)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]
                         + ([signal.SIGUSR2] if launcher() == "openmpi" else []))
def test_a_signal_stops_handing_out_work_stores_everything_and_the_rerun_resumes(tmp_path, sig):
    out = str(tmp_path / "r.h5")
    args = ["run", "kernels.sleep:task", "--count", "40", "--out", out, "--flush-interval", "0.2"]
    job = start_mtcmpi(args)
    wait_for(lambda: journalled(out), 90, "a journalled task")
    signal_job(job.pid, sig)   # every process, as a batch system does
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
    Python itself starts, a signal still kills: nothing of mtcmpi runs yet.) MPICH's mpiexec
    (Hydra 4.0) passes the signal on too, and then at times reports exit status 0 for ranks
    that exited 75 (it did so for 1 run in 6 of a bare `sys.exit(75)`; README)."""
    (tmp_path / "slowmodel.py").write_text("import time\ntime.sleep(3.0)\n\ndef f(x):\n    return x\n")
    out = str(tmp_path / "r.h5")
    job = start_mtcmpi(["run", "slowmodel:f", "--count", "6", "--out", out],
                       cwd=str(tmp_path))
    time.sleep(1.5)
    signal_job(job.pid, signal.SIGUSR1)
    stdout, stderr = job.communicate(timeout=60)
    assert job.returncode == EXIT_STOPPED or launcher() == "mpich" and job.returncode == 0, stdout + stderr
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
    (["--grace", "nan"], "--grace must be >= 0 and finite (at most 100,000,000 s), not nan"),
    (["--grace", "inf"], "--grace must be >= 0 and finite (at most 100,000,000 s), not inf"),
    (["--walltime", "nan"], "--walltime 'nan' is not HH:MM:SS"),
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


STALLING = """
import os, signal, time

def f(i):
    \"\"\"Tasks below QUICK take 50 ms; the others, while the flag file exists, STALL s.\"\"\"
    {setup}
    time.sleep({stall} if i >= {quick} and os.path.exists({flag!r}) else 0.05)
    with open({log!r}, "a") as f:
        f.write(f"{{i}}\\n")
    return i
"""


class Stalling:
    """A task module in tmp_path: quick tasks, then (while its flag exists) stalled ones; every
    finished task appends its id to a log, so a test sees what finished, and how often."""

    def __init__(self, tmp_path, quick=4, stall=60, setup="pass"):
        self.dir, self.flag, self.log = tmp_path, tmp_path / "stall", tmp_path / "finished.log"
        self.flag.touch()
        (tmp_path / "stalling.py").write_text(STALLING.format(
            quick=quick, stall=stall, flag=str(self.flag), log=str(self.log), setup=setup))
        self.out = str(tmp_path / "r.h5")

    def finished(self) -> list[int]:
        return [int(x) for x in self.log.read_text().split()] if self.log.exists() else []

    def args(self, *extra, count=20):
        return ["run", "stalling:f", "--count", str(count), "--chunk", "1", "--out", self.out,
                "--flush-interval", "1000", *extra]

    def start(self, *extra, count=20, ranks=3, **env):
        return start_mtcmpi(self.args(*extra, count=count), ranks, str(self.dir), **env)

    def journalled(self) -> set[int]:
        return journalled(self.out)

    def resume(self, count=20):
        """Run again without stalls: it must finish, running nothing that finished before."""
        before = self.finished()
        self.flag.unlink()
        proc = mtcmpi(self.args(count=count), ranks=3, cwd=str(self.dir), timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        after = self.finished()
        assert sorted(after) == list(range(count)), "lost or ran twice: " + str(sorted(after))
        assert len(before) == len(set(before))
        return proc


def journalled(out: str) -> set[int]:
    """The ids of the tasks in the journal of results file `out`."""
    from mtcmpi.output import journal
    return {int(t) for frame in journal.read(out) for t in frame.ids}


def wait_for(condition, seconds=30.0, what="the condition"):
    """Poll condition until true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {seconds} s"
        time.sleep(0.05)


def signal_ranks(job, sig):
    """Signal the ranks only (each leads its own process group), not mpiexec."""
    pids = ranks_of(job.pid)
    for pid in pids:
        os.kill(pid, sig)
    return pids


@pytest.mark.parametrize("grace", [0, 1])
def test_tasks_still_running_at_grace_end_the_job_with_everything_finished_journalled(tmp_path, grace):
    """No periodic flush (--flush-interval 1000): the signal itself journals what finished."""
    model = Stalling(tmp_path)
    job = model.start("--grace", str(grace))
    wait_for(lambda: len(model.finished()) == 4, what="the quick tasks")
    signalled = time.monotonic()
    signal_ranks(job, signal.SIGTERM)
    stdout, stderr = job.communicate(timeout=30)
    assert time.monotonic() - signalled < grace + 10
    assert job.returncode == EXIT_STOPPED, stdout + stderr
    assert f"still running {grace} s after signal SIGTERM (--grace)" in stderr
    assert "finished tasks are in the journal" in stderr
    assert model.journalled() == {0, 1, 2, 3}
    assert "resumed: 4 tasks were done" in model.resume().stdout


def test_a_task_that_finishes_after_the_stop_signal_is_journalled_at_once(tmp_path):
    """The launcher may kill the ranks any moment after a stop signal (a second Ctrl-C, Open
    MPI's SIGKILL): a task that finishes then is journalled at once (its rank starts no other
    and closes its journal), not at the next flush, while another rank's task goes on."""
    log = tmp_path / "finished.log"
    model = Stalling(tmp_path, setup=f"if i == 4: time.sleep(2); open({str(log)!r}, 'a').write('4\\n'); return i")
    job = model.start("--grace", "100")
    wait_for(lambda: len(model.finished()) == 4, what="the quick tasks")
    signal_ranks(job, signal.SIGTERM)
    wait_for(lambda: model.journalled() == {0, 1, 2, 3, 4}, 15, "task 4 in the journal")
    end_job(job.pid)
    job.communicate(timeout=30)
    assert "resumed: 5 tasks were done" in model.resume().stdout


def test_a_second_ctrl_c_ends_the_job_at_once(tmp_path):
    from mtcmpi.faults import REPEAT
    model = Stalling(tmp_path)
    job = model.start("--grace", "100")
    wait_for(lambda: len(model.finished()) == 4, what="the quick tasks")
    signal_ranks(job, signal.SIGINT)
    first = time.monotonic()
    wait_for(lambda: model.journalled() == {0, 1, 2, 3}, what="the journal")   # the first Ctrl-C wrote it
    wait_for(lambda: time.monotonic() > first + REPEAT + 0.1, what="a second past the first Ctrl-C")
    signal_ranks(job, signal.SIGINT)
    stdout, stderr = job.communicate(timeout=30)
    assert time.monotonic() - first < 30
    assert job.returncode == EXIT_STOPPED and "a second Ctrl-C" in stderr, stdout + stderr
    model.resume()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_of_mpiexec_journals_every_finished_task_though_the_ranks_are_killed(tmp_path, sig):
    """The tasks stall past the end. Open MPI's mpiexec answers SIGINT or SIGTERM with SIGCONT
    to the ranks, SIGTERM a second later and SIGKILL a second after that
    (odls_base_sigkill_timeout, 1 s by default); MPICH's (Hydra) passes the same signal on to
    every rank at once and kills nothing, so --grace ends the job, with one line. Either way no
    task outlives it, and the rank's first signal has journalled everything that finished."""
    model = Stalling(tmp_path)
    job = model.start("--grace", "2", OMPI_MCA_odls_base_sigkill_timeout="1")
    wait_for(lambda: len(model.finished()) == 4, what="the quick tasks")
    job.send_signal(sig)
    stdout, stderr = job.communicate(timeout=30)
    if launcher() == "mpich":
        assert job.returncode == EXIT_STOPPED, stdout + stderr
        assert f"still running 2 s after signal {signal.Signals(sig).name} (--grace)" in stderr
    assert not os.path.exists(model.out)   # ended: no results file ...
    assert model.journalled() == {0, 1, 2, 3}, stdout + stderr   # ... but nothing lost
    assert "resumed: 4 tasks were done" in model.resume().stdout


def test_a_second_ctrl_c_to_mpiexec_ends_the_job_and_loses_nothing_finished(tmp_path):
    """MPICH's mpiexec answers a second SIGINT by SIGKILLing the ranks at once ("Ctrl-C
    caught... cleaning up processes", exit 255); Open MPI's exits at once (exit 1) and its ranks
    die unsignalled. Either way the job ends though the tasks stall and --grace is long, and
    the first signal the ranks saw journalled what finished. (Open MPI's ranks see none before
    its SIGTERM, odls_base_sigkill_timeout after the first Ctrl-C: a second one before that
    is a kill -9, which keeps what the last periodic flush journalled; README.)"""
    model = Stalling(tmp_path)
    job = model.start("--grace", "100", OMPI_MCA_odls_base_sigkill_timeout="1")
    wait_for(lambda: len(model.finished()) == 4, what="the quick tasks")
    job.send_signal(signal.SIGINT)
    first = time.monotonic()
    wait_for(lambda: model.journalled() == {0, 1, 2, 3}, what="the journal")
    job.send_signal(signal.SIGINT)
    stdout, stderr = job.communicate(timeout=30)
    assert time.monotonic() - first < 20 and job.returncode != 0, stdout + stderr
    wait_for(lambda: not job_processes(job.pid), 10, "every rank gone")
    assert not os.path.exists(model.out) and model.journalled() == {0, 1, 2, 3}
    assert "resumed: 4 tasks were done" in model.resume().stdout


def test_ctrl_c_to_mpiexec_with_scripts_mpienv_stops_stores_and_resumes(tmp_path):
    """With scripts/mpienv's odls_base_sigkill_timeout Open MPI's ranks get SIGTERM that long
    after the Ctrl-C and as long again to finish their tasks; MPICH's get the SIGINT itself at
    once, and --grace to finish: the run ends as a stopped run."""
    import re
    with open(os.path.join(ROOT, "scripts", "mpienv")) as f:
        delay = re.search(r"odls_base_sigkill_timeout:-(\d+)", f.read()).group(1)
    model = Stalling(tmp_path, stall=1)
    job = model.start(count=40, OMPI_MCA_odls_base_sigkill_timeout=delay)
    wait_for(lambda: len(model.finished()) == 4, what="the quick tasks")
    job.send_signal(signal.SIGINT)
    stdout, stderr = job.communicate(timeout=60)
    seen = "SIGINT" if launcher() == "mpich" else "SIGTERM"
    assert f"stopped early: signal {seen}" in stdout, stdout + stderr
    with h5py.File(model.out) as f:
        done = int((f["tasks"]["status"][:] == 1).sum())
    assert 4 < done < 40
    assert f"resumed: {done} tasks were done" in model.resume(count=40).stdout


def test_a_task_that_ignores_sigterm_does_not_turn_stopping_off(tmp_path):
    model = Stalling(tmp_path, quick=1000, setup="signal.signal(signal.SIGTERM, signal.SIG_IGN) if i < 2 else None")
    job = model.start(count=1000)
    wait_for(lambda: len(model.finished()) > 60, what="1.5 s of tasks")   # mtcmpi looks once a second
    signal_ranks(job, signal.SIGTERM)
    stdout, stderr = job.communicate(timeout=30)
    assert job.returncode == EXIT_STOPPED and "stopped early: signal SIGTERM" in stdout, stdout + stderr
    assert "a task replaced the handler of SIGTERM; mtcmpi put its own back" in stderr


def test_a_stop_signal_while_a_rank_is_frozen_in_start_up_ends_the_job_at_grace(tmp_path):
    """One rank stopped (SIGSTOP) before it reaches the first collective: the others wait for
    it there; a stop signal then ends the job --grace later instead of never."""
    (tmp_path / "slow.py").write_text(f"import os, time\nopen({str(tmp_path / 'started')!r} + str(os.getpid()), 'w')"
                                      "\ntime.sleep(2)\n\ndef f(i):\n    return i\n")
    job = start_mtcmpi(["run", "slow:f", "--count", "4", "--grace", "1"], 3, str(tmp_path))
    wait_for(lambda: len(list(tmp_path.glob("started*"))) == 3, what="every rank importing")
    frozen = int(sorted(tmp_path.glob("started*"))[-1].name[len("started"):])
    os.kill(frozen, signal.SIGSTOP)
    t0 = time.monotonic()
    for pid in set(ranks_of(job.pid)) - {frozen}:
        os.kill(pid, signal.SIGTERM)
    stdout, stderr = job.communicate(timeout=30)
    assert time.monotonic() - t0 < 20
    assert job.returncode == EXIT_STOPPED, stdout + stderr
    assert "still running 1 s after signal SIGTERM (--grace)" in stderr


def test_a_task_waiting_in_an_mpi_collective_ends_at_grace(tmp_path):
    """A task that calls COMM_WORLD.Barrier waits forever (no other rank joins it): a stop
    signal ends it --grace later, though the rank is inside MPI, where no Python handler runs."""
    (tmp_path / "collective.py").write_text(
        f"from mpi4py import MPI\n\ndef f(i):\n    open({str(tmp_path / 'entered')!r}, 'w').close()\n"
        "    MPI.COMM_WORLD.Barrier()\n    return i\n")
    job = start_mtcmpi(["run", "collective:f", "--count", "4", "--grace", "1"], 3, str(tmp_path))
    wait_for(lambda: (tmp_path / "entered").exists(), what="a task in the Barrier")
    t0 = time.monotonic()
    signal_ranks(job, signal.SIGTERM)
    stdout, stderr = job.communicate(timeout=30)
    assert time.monotonic() - t0 < 20
    assert job.returncode == EXIT_STOPPED and "still running 1 s after signal SIGTERM" in stderr, stdout + stderr
