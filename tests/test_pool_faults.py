"""Elastic pools: one joins mid-run, one is SIGKILLed mid-run, one leaves at its walltime, and a
task that kills its pools fails alone. Exactly-once is checked from the per-task record."""
from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest

import mtcmpi
from mtcmpi.pool.hub import PoolLost
from tests.test_pool import pools, wait_until  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(180)


def nap(x, seconds=0.05):
    time.sleep(seconds)
    return x


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
