"""Elastic pools: one joins mid-run, one is SIGKILLed mid-run, one leaves at its walltime, and a
task that kills its pools fails alone. Exactly-once is checked from the per-task record."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import mtcmpi
from mtcmpi.pool.connection import SessionError
from mtcmpi.pool.hub import PoolLost
from tests.helpers import ROOT, environment
from tests.test_pool import pools, wait_until  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(180)


def nap(x, seconds=0.05):
    time.sleep(seconds)
    return x


def nap_marked(x, seconds, marker):
    """nap, leaving a file that says the task has started; `seconds` the first time it starts
    (its file alone), briefly when it runs again."""
    with open(f"{marker}.{os.getpid()}", "w"):
        pass
    first = len(glob.glob(f"{glob.escape(marker)}.*")) == 1
    return nap(x, seconds if first else 0.05)


def die(x):
    os._exit(9)   # the worker rank dies, so MPI ends the whole pool


def rows_of(ex, pool: int) -> int:
    return sum(1 for row in list(ex._record.rows.values()) if row[7] == pool)


def records(path) -> np.ndarray:
    with h5py.File(path) as f:
        return f["tasks"][:]


def test_second_pool_joins_and_takes_work(tmp_path, pools):
    path, out = str(tmp_path / "pool.json"), str(tmp_path / "s.h5")
    ex = mtcmpi.connect(path, ip="127.0.0.1", out=out)
    try:
        pools(path, 2)
        futures = [ex.submit(nap, i) for i in range(160)]
        wait_until(lambda: rows_of(ex, 0) >= 10, 60, "pool 0 running tasks")
        pools(path, 2)
        assert [f.result(timeout=120) for f in futures] == list(range(160))
    finally:
        ex.shutdown()
    tasks = records(out)
    assert (tasks["status"] == 1).all() and set(tasks["pool"]) == {0, 1}
    assert (tasks["pool"] == 1).sum() >= 10   # the newcomer took a real share


def test_pool_killed_mid_run_loses_no_task(tmp_path, pools):
    path, out = str(tmp_path / "pool.json"), str(tmp_path / "s.h5")
    ex = mtcmpi.connect(path, ip="127.0.0.1", out=out)
    try:
        pools(path, 2)
        futures = [ex.submit(nap, i, 0.1) for i in range(60)]
        wait_until(lambda: rows_of(ex, 0) >= 3, 60, "pool 0 running tasks")
        victim = pools(path, 2)
        wait_until(lambda: rows_of(ex, 1) >= 3, 60, "pool 1 running tasks")
        victim.kill()   # SIGKILL to mpiexec and its ranks: what pool 1 held must run again
        killed = time.time()
        values = [f.result(timeout=120) for f in futures]
        assert values == list(range(60))
    finally:
        ex.shutdown()
    tasks = records(out)
    assert len(tasks) == 60 and (tasks["status"] == 1).all()      # each task once, all ok
    assert (tasks["attempts"] >= 2).any()                          # the lost ones ran again ...
    rerun = tasks[tasks["attempts"] >= 2]
    assert (rerun["pool"] == 0).all()                              # ... on the pool that lived
    assert min(rerun["start"]) - killed < 2.5   # a closed connection is seen at once, not after LOST_S


def test_pool_leaves_at_its_walltime(tmp_path, pools):
    path, out = str(tmp_path / "pool.json"), str(tmp_path / "s.h5")
    ex = mtcmpi.connect(path, ip="127.0.0.1", out=out)
    try:
        short = pools(path, 2, "--walltime", "3", "--grace", "0")
        futures = [ex.submit(nap, i, 0.2) for i in range(30)]
        assert short.wait(60) == 75   # it left by itself, before the work was done
        assert "walltime reached; left the session cleanly" in short.output()
        assert not all(f.done() for f in futures)
        pools(path, 2)
        assert [f.result(timeout=120) for f in futures] == list(range(30))
    finally:
        ex.shutdown()
    tasks = records(out)
    assert (tasks["status"] == 1).all() and (tasks["attempts"] == 1).all()   # none started twice
    late = tasks[tasks["pool"] == 0]
    assert len(late) and late["end"].max() <= late["start"].min() + 3.2


def test_a_task_that_kills_its_pools_fails_alone(tmp_path, pools):
    path = str(tmp_path / "pool.json")
    ex = mtcmpi.connect(path, ip="127.0.0.1", max_losses=1)
    try:
        pools(path, 2)
        bad = ex.submit(die, 0)
        with pytest.raises(PoolLost, match="running on 1 pools that were lost"):
            bad.result(timeout=60)
        pools(path, 2)
        assert ex.submit(nap, 7).result(timeout=60) == 7
    finally:
        ex.shutdown()


def test_the_batch_systems_warning_drains_the_pool(tmp_path, pools):
    """SIGUSR1 to mpiexec (as a job script passes Slurm's warning on): the pool takes no new
    task, lets the running ones end, leaves with 75; another pool does the rest, none twice."""
    path, out = str(tmp_path / "pool.json"), str(tmp_path / "s.h5")
    ex = mtcmpi.connect(path, ip="127.0.0.1", out=out)
    try:
        first = pools(path, 2)
        futures = [ex.submit(nap, i, 0.2) for i in range(40)]
        wait_until(lambda: rows_of(ex, 0) >= 3, 60, "pool 0 running tasks")
        first.proc.send_signal(signal.SIGUSR1)
        assert first.wait(30) == 75, first.output()
        assert "got SIGUSR1 (the walltime is near)" in first.output()
        assert "got SIGUSR1; left the session cleanly" in first.output()
        assert not all(f.done() for f in futures)
        pools(path, 2)
        assert [f.result(timeout=120) for f in futures] == list(range(40))
    finally:
        ex.shutdown()
    tasks = records(out)
    assert (tasks["status"] == 1).all() and (tasks["attempts"] == 1).all()


def test_tasks_running_past_the_grace_run_again_elsewhere(tmp_path, pools):
    path, out = str(tmp_path / "pool.json"), str(tmp_path / "s.h5")
    ex = mtcmpi.connect(path, ip="127.0.0.1", out=out)
    try:
        first = pools(path, 2, "--grace", "0.5")
        slow = ex.submit(nap_marked, 1, 24.0, str(tmp_path / "started"))
        wait_until(lambda: list(tmp_path.glob("started.*")), 60, "the task to start")
        first.proc.send_signal(signal.SIGUSR1)
        t0 = time.monotonic()
        assert first.wait(30) == 75, first.output()
        # well before the 24 s task would end; MPI_Abort itself takes up to twice Open MPI's
        # odls_base_sigkill_timeout (scripts/mpienv: 5 s; the tests': 2 s) before the last rank is gone
        assert time.monotonic() - t0 < 18.0, "the pool waited for the task beyond --grace"
        assert "1 tasks still running 0.5 s after SIGUSR1 (--grace)" in first.output()
        pools(path, 2)
        assert slow.result(timeout=60) == 1
    finally:
        ex.shutdown()
    [task] = records(out)
    assert task["status"] == 1 and task["attempts"] == 2 and task["pool"] == 1


DYING_NOTEBOOK = """
import json, os, signal, sys, time
import mtcmpi
ex = mtcmpi.connect(sys.argv[1], ip="127.0.0.1", out=sys.argv[2])
assert [ex.submit(pow, i, 2).result(timeout=60) for i in range(20)] == [i * i for i in range(20)]
ex.submit(time.sleep, 60)
journal, end = sys.argv[2] + ".journal", time.monotonic() + 30
while time.monotonic() < end:   # the I/O thread flushes the journal every FLUSH_S seconds
    lines = open(journal).read().splitlines() if os.path.exists(journal) else []
    if sum(line.startswith("[") for line in lines) == 20 and '{"submitted": 21}' in lines:
        os.kill(os.getpid(), signal.SIGKILL)   # the kernel dies: no shutdown, no atexit
    time.sleep(0.1)
sys.exit("the journal never had the 20 results")
"""


def test_a_dead_sessions_record_is_recovered_by_the_next(tmp_path, pools):
    out = tmp_path / "s.h5"
    first = str(tmp_path / "first.json")
    pools(first, 2)
    dying = subprocess.run([sys.executable, "-c", DYING_NOTEBOOK, first, str(out)], cwd=ROOT,
                           env=environment(), capture_output=True, text=True, timeout=120)
    assert dying.returncode == -signal.SIGKILL, dying.stderr
    assert not out.exists() and (tmp_path / "s.h5.journal").exists()
    second = str(tmp_path / "second.json")
    ex = mtcmpi.connect(second, ip="127.0.0.1", out=str(out))   # recovers the journal into out
    try:
        tasks = records(out)
        assert len(tasks) == 21 and (tasks["status"][:20] == 1).all() and tasks["status"][20] == 0
        assert not (tmp_path / "s.h5.journal").exists()
        pools(second, 2)
        assert ex.submit(pow, 3, 2).result(timeout=60) == 9
    finally:
        ex.shutdown()
    tasks = records(out)
    assert len(tasks) == 22 and tasks["status"][21] == 1 and list(tasks["pool"][[0, 21]]) == [0, 1]
    with h5py.File(out) as f:
        assert f.attrs["sessions"] == 2 and f.attrs["pools"] == 2
    assert not (tmp_path / "s.h5.journal").exists()


def test_a_live_sessions_record_is_not_taken_over(tmp_path, pools):
    out = str(tmp_path / "s.h5")
    ex = mtcmpi.connect(str(tmp_path / "one.json"), ip="127.0.0.1", out=out)
    try:
        pools(str(tmp_path / "one.json"), 2)
        assert ex.submit(pow, 2, 2).result(timeout=60) == 4
        wait_until(lambda: os.path.exists(out + ".journal"), 10, "the journal")
        with pytest.raises(SessionError, match="is the record of the live session of pid"):
            mtcmpi.connect(str(tmp_path / "two.json"), ip="127.0.0.1", out=out)
    finally:
        ex.shutdown()
    assert records(out)["status"].tolist() == [1]
