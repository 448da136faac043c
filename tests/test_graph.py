"""Dataflow futures (mtcmpi.graph): in-process on one rank, and under `mpiexec -n 3 ... exec`."""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

from mtcmpi.futures import Executor
from mtcmpi.graph import DependencyError, holds_future
from tests.helpers import mtcmpi
from tests.tasks_for_tests import add, maybe_fail

pytestmark = pytest.mark.timeout(60)


def total(values, extra=None):
    return sum(values) + sum((extra or {}).values())


def wait_for(path: str) -> str:
    """A task that waits until a file exists (its input is then 'running' for as long as we want)."""
    import os
    while not os.path.exists(path):
        time.sleep(0.01)
    return path


@pytest.fixture
def ex():
    with Executor() as pool:
        yield pool


def test_holds_future_looks_into_lists_tuples_and_dicts():
    f = cf.Future()
    assert holds_future(f) and holds_future([1, (2, {"k": f})]) and holds_future({"a": [f]})
    assert not holds_future([1, (2, {"k": 3})]) and not holds_future("text")


def test_a_future_argument_passes_its_value_nested_or_not(ex):
    a = ex.submit(add, 1, 2)
    b = ex.submit(add, a, 10)
    c = ex.submit(total, [a, b, 4], extra={"x": (a)})
    assert (b.result(timeout=10), c.result(timeout=10)) == (13, 3 + 13 + 4 + 3)


def test_map_with_futures_in_its_items(ex):
    a = ex.submit(add, 1, 1)
    assert list(ex.map(add, [a, 5, a], [1, 1, a], timeout=10)) == [3, 6, 4]


def test_a_failed_input_fails_the_graph_below_with_dependency_error_naming_it(ex):
    bad = ex.submit(maybe_fail, 3)
    child = ex.submit(add, bad, 1)
    grandchild = ex.submit(add, [child], [])
    with pytest.raises(DependencyError) as err:
        grandchild.result(timeout=10)
    assert "x=3 is unlucky" in str(err.value) and err.value.failed.startswith("task ")
    assert "failed on rank 0" in err.value.failed and str(err.value).startswith("add#")
    assert isinstance(child.exception(timeout=10), DependencyError)
    assert ex.submit(add, 2, 2).result(timeout=10) == 4     # the rest goes on


def test_cancelling_a_waiting_call_cancels_its_dependents(ex, tmp_path):
    gate = ex.submit(wait_for, str(tmp_path / "go"))
    middle = ex.submit(add, gate, "x")
    below = ex.submit(add, middle, "y")
    assert middle.cancel() and middle.cancelled()
    done, _ = cf.wait([below], timeout=10)            # wait() hears of the cancellation
    assert below in done and below.cancelled()
    (tmp_path / "go").touch()
    assert gate.result(timeout=10).endswith("go")


def test_shutdown_waits_for_calls_whose_inputs_are_still_running(tmp_path):
    with Executor() as pool:
        gate = pool.submit(wait_for, str(tmp_path / "go"))
        after = pool.submit(add, gate, "!")
        threading.Timer(0.2, (tmp_path / "go").touch).start()
    assert after.result(timeout=10).endswith("go!")


def test_a_dependent_chain_of_many_calls(ex):
    value = 0
    for _ in range(300):
        value = ex.submit(add, value, 1)
    assert value.result(timeout=30) == 300


DRIVER = """
from mtcmpi.futures import Executor
from mtcmpi.graph import DependencyError
from tests.tasks_for_tests import add, maybe_fail, where

if __name__ == '__main__':
    with Executor() as ex:
        parts = [ex.submit(add, i, 0) for i in range(40)]
        whole = ex.submit(sum, parts)
        pids = {ex.submit(where, p).result() for p in parts}
        broken = ex.submit(add, ex.submit(maybe_fail, 8), 1)
        try:
            broken.result()
        except DependencyError as err:
            print("DEP", err.failed)
        print("SUM", whole.result(), "PIDS", len(pids))
"""


@pytest.mark.timeout(90)
def test_dataflow_under_mpiexec(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    from tests.helpers import ROOT
    proc = mtcmpi(["exec", str(script)], ranks=3, cwd=ROOT, timeout=80)
    assert proc.returncode == 0, proc.stderr
    assert "SUM 780 PIDS 2" in proc.stdout
    assert "DEP task" in proc.stdout and "failed on rank" in proc.stdout
