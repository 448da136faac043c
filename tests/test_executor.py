"""mtcmpi.futures on one rank (in-process): Executor, executor(), parallel_map; and
run_script end to end under `mpiexec -n 2` and `-n 4` (subprocesses with timeouts)."""
from __future__ import annotations

import concurrent.futures as cf
import inspect
import os
import pickle
import re
import socket
import subprocess
import sys
import time

import pytest

from mtcmpi.driver import run_script
from mtcmpi.futures import Executor, RemoteError, RemoteTraceback, executor, parallel_map
from tests.tasks_for_tests import fail, nap
from tests.helpers import MPI_ENV, ROOT

pytestmark = pytest.mark.timeout(60)


def square(x):
    return x * x


def fail_odd(x):
    if x % 2:
        fail(x)
    return x


class Picky(Exception):
    """Pickles, but does not unpickle: its args do not fit its __init__."""

    def __init__(self, a, b):
        super().__init__(a)


def raise_picky(x):
    raise Picky(x, x)


@pytest.fixture
def ex():
    with Executor() as pool:
        yield pool


def test_submit_returns_a_standard_future_with_the_result(ex):
    future = ex.submit(square, 7)
    assert isinstance(future, cf.Future)
    assert future.result(timeout=10) == 49
    assert future.done() and not future.cancelled()
    assert ex.submit(sorted, [3, 1, 2], reverse=True).result(timeout=10) == [3, 2, 1]


def test_task_exception_keeps_its_type_with_the_remote_traceback(ex):
    with pytest.raises(ValueError, match="x=3 is unlucky") as info:
        ex.submit(fail, 3).result(timeout=10)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert f"failed on rank 0, host {socket.gethostname()}, pid {os.getpid()}" in text
    assert "in fail" in text and "ValueError: x=3 is unlucky" in text


def test_exception_that_does_not_unpickle_becomes_remote_error(ex):
    with pytest.raises(RemoteError, match="Picky: 5") as info:
        ex.submit(raise_picky, 5).result(timeout=10)
    assert "in raise_picky" in str(info.value.__cause__)


def test_map_is_lazy_and_keeps_the_order(ex):
    t0 = time.monotonic()
    results = ex.map(nap, [0.3, 0.1, 0.0])
    assert time.monotonic() - t0 < 0.2   # returned before the tasks ran
    assert inspect.isgenerator(results)
    assert list(results) == [0.3, 0.1, 0.0]
    for chunksize in (1, 3, 100):
        assert list(ex.map(square, range(10), chunksize=chunksize)) == [x * x for x in range(10)]
    assert list(ex.map(pow, [2, 3], [5, 2])) == [32, 9]


def test_map_timeout_raises_timeout_error(ex):
    results = ex.map(nap, [0.5], timeout=0.05)
    with pytest.raises(cf.TimeoutError):
        next(results)


def test_map_raises_at_the_failing_item(ex):
    results = ex.map(fail_odd, range(4))
    assert next(results) == 0
    with pytest.raises(ValueError, match="x=1"):
        next(results)


def test_closing_a_map_early_drops_the_calls_not_yet_started(ex):
    results = ex.map(nap, [0.1] * 20)
    assert next(results) == 0.1
    results.close()
    t0 = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - t0 < 0.5   # at most a call or two more, not 19 x 0.1 s


def test_shutdown_with_cancel_futures_cancels_a_pending_map(ex):
    results = ex.map(nap, [0.2] * 5)
    time.sleep(0.05)
    ex.shutdown(wait=False, cancel_futures=True)
    assert next(results) == 0.2   # the call that had started finishes
    with pytest.raises(cf.CancelledError):
        list(results)


def test_map_after_shutdown_is_refused(ex):
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.map(square, [1])


def test_wait_and_as_completed(ex):
    futures = [ex.submit(nap, s) for s in (0.2, 0.0, 0.1)]
    done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED, timeout=10)
    assert done
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=10)) == [0.0, 0.1, 0.2]
    done, not_done = cf.wait(futures, timeout=10)
    assert len(done) == 3 and not not_done


def test_shutdown_cancel_futures_cancels_the_queued_ones():
    ex = Executor()
    slow = ex.submit(nap, 0.3)
    queued = [ex.submit(square, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert slow.done()


def test_submit_after_shutdown_raises_runtime_error():
    ex = Executor()
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)


def test_a_function_that_does_not_pickle_fails_at_submit_naming_it(ex):
    with pytest.raises(pickle.PicklingError, match="<lambda>.*module level"):
        ex.submit(lambda x: x, 1)

    def inner(x):
        return x
    with pytest.raises(pickle.PicklingError, match="inner"):
        ex.submit(inner, 1)
    with pytest.raises(pickle.PicklingError, match="arguments of a call of 'square'"):
        ex.submit(square, lambda: 0)


def test_one_executor_per_communicator_at_a_time():
    with Executor():
        with pytest.raises(RuntimeError, match="already running"):
            Executor()
    with Executor() as again:
        assert again.submit(square, 2).result(timeout=10) == 4


def test_executor_context_manager_on_one_rank():
    with executor() as ex:
        assert isinstance(ex, Executor)
        assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_parallel_map_is_the_loop():
    assert parallel_map(square, range(20)) == [x * x for x in range(20)]
    assert parallel_map(square, iter([])) == []
    with pytest.raises(ValueError, match="x=1"):
        parallel_map(fail_odd, range(4))


def test_parallel_map_without_mpi4py_runs_the_loop():
    code = ("import sys; sys.modules['mpi4py'] = None; from mtcmpi.futures import parallel_map; "
            "print(parallel_map(abs, [-1, 2, -3]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.stdout.strip() == "[1, 2, 3]", proc.stderr


DRIVER = '''
import sys
from mpi4py import MPI
import mtcmpi.futures as mx


class Point:                          # defined in the script: results travel back as it
    def __init__(self, rank):
        self.rank = rank


def where(x):
    return Point(MPI.COMM_WORLD.rank)


if __name__ == "__main__":
    mode = sys.argv[1]
    with mx.Executor() as ex:
        ranks = {p.rank for p in ex.map(where, range(40))}
        print("argv", sys.argv[1:], "ranks", sorted(ranks), flush=True)
    print("map", len(mx.parallel_map(where, range(7))), flush=True)
    if mode == "raise":
        mx.Executor().submit(where, 0)   # left running: run_script must still end it
        raise KeyError("the driver failed")
    if mode == "exit":
        sys.exit(5)
'''


def test_run_script_in_process_gives_the_exit_status(tmp_path, capfd):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    main = sys.modules["__main__"]
    assert run_script(str(script), ["ok", "x"]) == 0
    out = capfd.readouterr().out
    assert "argv ['ok', 'x'] ranks [0]" in out and "map 7" in out
    assert run_script(str(script), ["exit"]) == 5
    assert run_script(str(script), ["raise"]) == 1
    err = capfd.readouterr().err
    assert "KeyError: 'the driver failed'" in err and 'driver.py", line' in err
    assert os.path.join("mtcmpi", "driver.py") not in err   # the script's frames only
    assert sys.modules["__main__"] is main


RUN = ("import sys; from mpi4py import MPI; from mtcmpi.driver import run_script; "
       "s = run_script(sys.argv[1], sys.argv[2:]); "
       "print(f'rank {MPI.COMM_WORLD.rank} exits {s}', flush=True); sys.exit(s)")


def mpiexec_script(ranks: int, script, *args: str) -> subprocess.CompletedProcess:
    """`mpiexec -n ranks python -c RUN script args`: what `mtcmpi exec` does, as a subprocess."""
    env = dict(os.environ, **MPI_ENV, PYTHONPATH=ROOT)
    return subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, "-c", RUN, str(script), *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
                          start_new_session=True)


def exits(proc: subprocess.CompletedProcess) -> list[tuple[int, int]]:
    """(rank, exit status) as each rank printed it (mpiexec may interleave the lines)."""
    return sorted((int(r), int(s)) for r, s in re.findall(r"rank (\d+) exits (\d+)", proc.stdout))


@pytest.mark.e2e
@pytest.mark.parametrize("ranks", [2, 4])
def test_run_script_under_mpiexec(tmp_path, ranks):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = mpiexec_script(ranks, script, "ok")
    assert proc.returncode == 0, proc.stderr
    assert f"ranks {list(range(1, ranks))}" in proc.stdout and "map 7" in proc.stdout
    assert exits(proc) == [(r, 0) for r in range(ranks)]


@pytest.mark.e2e
@pytest.mark.parametrize("ranks", [2, 4])
@pytest.mark.parametrize("mode, status", [("raise", 1), ("exit", 5)])
def test_a_failing_driver_ends_every_rank_with_its_status(tmp_path, ranks, mode, status):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    t0 = time.monotonic()
    proc = mpiexec_script(ranks, script, mode)
    assert proc.returncode == status
    assert exits(proc) == [(r, status) for r in range(ranks)]
    assert (mode == "raise") == ("KeyError: 'the driver failed'" in proc.stderr)
    assert time.monotonic() - t0 < 30


@pytest.mark.e2e
def test_a_missing_script_is_one_error_on_every_rank(tmp_path):
    proc = mpiexec_script(2, tmp_path / "nope.py")
    assert proc.returncode != 0
    assert "no such script" in proc.stderr
