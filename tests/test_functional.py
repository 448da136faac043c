"""Pydron-style @functional/@schedule: the proxy, in order on one process, and under mpiexec."""
from __future__ import annotations

import pickle
import re
from concurrent.futures import Future

import numpy as np
import pytest

import mtcmpi
from mtcmpi.sequential import Pending, resolved
from tests.helpers import ROOT, mtcmpi as run_mtcmpi, run

pytestmark = pytest.mark.timeout(60)


def done(value) -> Pending:
    future = Future()
    future.set_result(value)
    return Pending(future)


def test_a_pending_value_acts_as_its_value_in_every_use():
    p, items = done(6), done([3, 1, 2])
    assert (p + 1, 1 + p, p * p, -p, p // 4, 2 ** p, p % 4) == (7, 7, 36, -6, 1, 64, 2)
    assert p == 6 and p > 5 and bool(p) and hash(p) == hash(6) and f"{p:03d}" == "006"
    assert str(p) == "6" and isinstance(p, int) and int(p) + float(p) == 12.0
    assert items[0] == 3 and len(items) == 3 and 2 in items and sorted(items) == [1, 2, 3]
    assert [1] + items == [1, 3, 1, 2] and items.index(2) == 2
    assert pickle.loads(pickle.dumps(items)) == [3, 1, 2]
    assert np.asarray(done(np.arange(3))).sum() == 3
    assert resolved({"a": [p, (items,)]}) == {"a": [6, ([3, 1, 2],)]}


def test_a_failed_call_raises_where_its_value_is_used():
    future = Future()
    future.set_exception(ValueError("no"))
    with pytest.raises(ValueError, match="no"):
        _ = Pending(future) + 1


@mtcmpi.functional
def twice(x):
    return 2 * x


@mtcmpi.schedule
def doubled_chain(n):
    values, v = [], 1
    for _ in range(n):
        v = twice(v)
        values.append(v)
    return {"last": v, "all": values, "total": sum(values) if v > 0 else None}


def test_without_mpi_ranks_everything_runs_in_order_with_plain_values():
    assert mtcmpi.functional is not mtcmpi.schedule and callable(mtcmpi.functional)
    assert twice(4) == 8
    assert doubled_chain(4) == {"last": 16, "all": [2, 4, 8, 16], "total": 30}


DRIVER = """
import os, sys, time
import mtcmpi

@mtcmpi.functional
def process(x):
    time.sleep(0.4)
    return x * x, os.getpid()

@mtcmpi.functional
def step(previous, i):
    return previous * 10 + i

@mtcmpi.schedule
def pydron_example(inputs):
    outputs = []
    for x in inputs:
        outputs.append(process(x))
    return outputs

@mtcmpi.schedule
def chain(n):
    value = 0
    for i in range(1, n + 1):
        value = step(value, i)
    if value > 100:                 # a branch on a pending value waits for it
        value = value + 0
    return value, [value]

if __name__ == '__main__':
    start = time.time()
    out = pydron_example(range(6))
    took = time.time() - start
    rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
    print(f"rank {rank} squares {[v for v, _ in out]} pids {len({p for _, p in out})} took {took:.2f}")
    print(f"rank {rank} chain {chain(5)}")
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["exec", "spmd"])
def test_pydron_example_runs_in_parallel_and_a_chain_in_order(tmp_path, how):
    script = tmp_path / "pydron_driver.py"
    script.write_text(DRIVER)
    args = ["exec", str(script)] if how == "exec" else None
    if args is None:   # an SPMD program: every rank runs the script and calls the schedules
        proc = run(3, [str(script)], 100, env={"PYTHONPATH": ROOT}, cwd=ROOT)
    else:
        proc = run_mtcmpi(args, ranks=3, cwd=ROOT, timeout=100)
    assert proc.returncode == 0, proc.stderr
    ranks = 3 if how == "spmd" else 1
    squares = re.findall(r"squares \[0, 1, 4, 9, 16, 25\] pids 2 took ([\d.]+)", proc.stdout)
    assert len(squares) == ranks, proc.stdout
    assert float(squares[0]) < 6 * 0.4          # two workers: about 3 x 0.4 s, not 6 x 0.4 s
    assert proc.stdout.count("chain (12345, [12345])") == ranks
