"""Parallel tasks under faults: --retries, and a kill -9 of the whole job, then resume."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers import mtcmpi, signal_job, start

pytestmark = pytest.mark.timeout(180)
TASKS = "tests.tasks_for_groups"


def test_retries_try_a_failed_group_again(tmp_path):
    params = tmp_path / "p.csv"
    params.write_text("x,dir\n" + "".join(f"{i},{tmp_path}\n" for i in range(4)))
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", f"{TASKS}:flaky", "--params", str(params), "--ranks-per-task", "2",
                   "--retries", "1", "--out", str(out)], ranks=4)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(out) as f:
        assert (f["tasks"]["status"][:] == 1).all() and (f["tasks"]["attempts"][:] == 2).all()
        assert (f["results/value"][:] == np.arange(4)).all()
        assert (f["tasks"]["ranks"][:] == 2).all() and len(f["attempts"]) == 8


def started_mid_run(tmp_path: Path, n: int, **pipes) -> tuple[subprocess.Popen, list[str], Path]:
    """(job, args, out): n parallel tasks of 1 or 2 ranks started on 4 ranks in the background,
    returned once some of them are journalled (the job is killed if none is within 60 s)."""
    params = tmp_path / "p.csv"
    params.write_text("x,k\n" + "".join(f"{i},{1 + i % 2}\n" for i in range(n)))
    out = tmp_path / "r.h5"
    args = ["run", f"{TASKS}:nap", "--params", str(params), "--ranks", "k", "--out", str(out),
            "--flush-interval", "0.1", "--quiet"]
    job = start(4, ["-m", "mtcmpi", *args], **pipes)
    journal = f"{out}.journal"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            frames = [p for p in os.listdir(journal) if p.endswith(".jnl")] if os.path.isdir(journal) else []
            if any(os.path.getsize(os.path.join(journal, p)) for p in frames):
                return job, args, out
            time.sleep(0.05)
        pytest.fail("no task was journalled within 60 s")
    except BaseException:
        signal_job(job.pid, signal.SIGKILL)
        job.communicate(timeout=30)
        raise


def test_kill_then_resume_runs_each_parallel_task_once(tmp_path):
    n = 16
    job, args, out = started_mid_run(tmp_path, n, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signal_job(job.pid, signal.SIGKILL)
    job.wait(30)
    assert not out.exists()
    proc = mtcmpi(args, ranks=4)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed = re.search(r"resumed: (\d+) tasks", proc.stdout)
    assert resumed and 0 < int(resumed.group(1)) < n, proc.stdout   # killed mid-run
    with h5py.File(out) as f:
        x, k = np.arange(n), 1 + np.arange(n) % 2
        assert (f["tasks"]["status"][:] == 1).all() and (f["tasks"]["attempts"][:] == 1).all()
        assert (f["results/value"][:] == x * k * 10 + k).all()
        assert (f["tasks"]["ranks"][:] == k).all()
        groups = f["groups"][:]
    assert sorted(groups["task"]) == list(np.flatnonzero(k == 2))


def test_a_rank_that_left_its_group_in_a_collective_ends_the_job_resumably(tmp_path):
    out = tmp_path / "r.h5"
    args = ["run", f"{TASKS}:raises_early", "--count", "3", "--ranks-per-task", "2", "--out",
            str(out), "--flush-interval", "0.2", "--quiet"]
    t0 = time.monotonic()
    proc = mtcmpi(args, ranks=4)
    assert proc.returncode == 75, proc.stdout + proc.stderr   # stopped: run again to resume
    assert time.monotonic() - t0 < 40
    lines = [line for line in proc.stderr.splitlines() if "did not finish the task" in line]
    assert len(lines) == 1 and "task 1: this rank raised ValueError" in lines[0], proc.stderr
    again = mtcmpi(args, ranks=4)
    assert again.returncode == 1, again.stdout + again.stderr   # task 1 failed, in the earlier run
    with h5py.File(out) as f:
        assert list(f["tasks"]["status"][:]) == [1, 2, 1]
        assert "left before the allreduce" in f["errors/message"].asstr()[1]
        assert f["tasks"]["ranks"][1] == 2 and (f["results/value"][[0, 2]] == [0, 4]).all()


def test_a_signal_stops_parallel_tasks_stores_them_and_the_rerun_resumes(tmp_path):
    n = 16
    job, args, out = started_mid_run(tmp_path, n, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    signal_job(job.pid, signal.SIGTERM)
    stdout, stderr = job.communicate(timeout=60)
    assert "stopped early: signal SIGTERM" in stdout, stdout + stderr   # (mpiexec, signalled, exits 1)
    with h5py.File(out) as f:
        status = f["tasks"]["status"][:]
        assert set(status.tolist()) <= {0, 1} and 0 < (status == 1).sum() < n
        assert (f["tasks"]["ranks"][status == 1] == (1 + np.arange(n) % 2)[status == 1]).all()
    again = mtcmpi(args, ranks=4)
    assert again.returncode == 0 and f"resumed: {int((status == 1).sum())} tasks" in again.stdout


def test_a_task_run_again_on_one_rank_leaves_groups_and_an_old_file_reads_as_one_rank(tmp_path):
    from numpy.lib import recfunctions

    out = tmp_path / "r.h5"
    args = ["run", f"{TASKS}:member_fails", "--count", "2", "--out", str(out), "--quiet"]
    assert mtcmpi(args + ["--ranks-per-task", "2"], ranks=3).returncode == 1   # task 1 fails
    with h5py.File(out, "r+") as f:
        assert list(f["tasks"]["ranks"][:]) == [2, 2] and sorted(f["groups"]["task"][:]) == [0, 1]
    again = mtcmpi(args + ["--ranks-per-task", "1", "--retry-failed"], ranks=3)
    assert again.returncode == 1 and "resumed: 1 tasks" in again.stdout, again.stdout + again.stderr
    with h5py.File(out, "r+") as f:
        assert list(f["tasks"]["ranks"][:]) == [2, 1] and list(f["groups"]["task"][:]) == [0]
        old = recfunctions.drop_fields(f["tasks"][:], "ranks", usemask=False)
        del f["tasks"], f["groups"]   # as a file written before parallel tasks
        f.create_dataset("tasks", data=old)
    third = mtcmpi(args + ["--ranks-per-task", "1", "--retry-failed"], ranks=3)
    assert third.returncode == 1, third.stdout + third.stderr
    with h5py.File(out) as f:
        assert list(f["tasks"]["ranks"][:]) == [1, 1] and "groups" not in f
        assert list(f["tasks"]["attempts"][:]) == [1, 3]
