"""mtcmpi.Executor on several ranks (run under `mpiexec -n 2` and `-n 4` by scripts/test).

Every test is collective: all ranks enter `with executor() as ex` once, rank 0 drives and
asserts inside the block (a failed assertion still releases the serving ranks), the others
serve and assert only afterwards, so a failure never leaves a rank in a block the others left.
"""
import concurrent.futures as cf
import os
import pickle
import threading
import time

import pytest
from mpi4py import MPI

from mtcmpi.futures import Executor, RemoteError, RemoteTraceback, executor, parallel_map
from tests.tasks_for_tests import fail, nap

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(60)]
comm = MPI.COMM_WORLD
WORKERS = range(1, comm.size)


def square(x):
    return x * x


def rank_after(seconds):
    time.sleep(seconds)
    return comm.rank


def pid(x):
    return os.getpid()


class Picky(Exception):
    """Pickles, but does not unpickle: its args do not fit its __init__."""

    def __init__(self, a, b):
        super().__init__(a)


def raise_picky(x):
    raise Picky(x, x)


def lock(x):
    return threading.Lock() if x == 2 else x


def nested(n):
    return parallel_map(square, range(n))


def test_results_come_from_every_worker_and_never_rank_0():
    pids = comm.allgather(os.getpid())
    with executor() as ex:
        if ex is None:
            return
        assert set(ex.map(rank_after, [0.02] * (6 * len(WORKERS)))) == set(WORKERS)
        assert pids[0] not in set(ex.map(pid, range(50)))


def test_submit_result_and_keyword_arguments():
    with executor() as ex:
        if ex is None:
            return
        assert ex.submit(square, 9).result(timeout=10) == 81
        assert ex.submit(sorted, [3, 1, 2], reverse=True).result(timeout=10) == [3, 2, 1]


def test_a_task_exception_names_its_rank_and_the_worker_survives():
    with executor() as ex:
        if ex is None:
            return
        futures = [ex.submit(fail, i) for i in range(3 * len(WORKERS))]
        for i, future in enumerate(futures):
            exc = future.exception(timeout=10)
            assert isinstance(exc, ValueError) and str(exc) == f"x={i} is unlucky"
            assert isinstance(exc.__cause__, RemoteTraceback)
            text = str(exc.__cause__)
            assert "failed on rank " in text and "failed on rank 0," not in text
            assert "host " in text and "pid " in text and "in fail" in text
        assert set(ex.map(rank_after, [0.02] * (6 * len(WORKERS)))) == set(WORKERS)


def test_what_does_not_travel_back_fails_its_own_task_only():
    with executor() as ex:
        if ex is None:
            return
        with pytest.raises(RemoteError, match="Picky: 4"):
            ex.submit(raise_picky, 4).result(timeout=10)
        futures = [ex.submit(lock, i) for i in range(5)]
        cf.wait(futures, timeout=10)
        with pytest.raises(pickle.PicklingError, match="result .* cannot be sent back to rank 0"):
            futures[2].result()
        assert [f.result() for i, f in enumerate(futures) if i != 2] == [0, 1, 3, 4]


def test_map_order_laziness_timeout_and_chunks():
    with executor() as ex:
        if ex is None:
            return
        t0 = time.monotonic()
        results = ex.map(nap, [0.3, 0.0, 0.1])
        assert time.monotonic() - t0 < 0.2
        assert list(results) == [0.3, 0.0, 0.1]
        with pytest.raises(cf.TimeoutError):
            next(ex.map(nap, [0.5], timeout=0.05))
        for chunksize in (1, 7, 1000):
            assert list(ex.map(square, range(500), chunksize=chunksize)) == [x * x for x in range(500)]


def test_a_map_closed_early_stops_and_the_executor_goes_on():
    with executor() as ex:
        if ex is None:
            return
        results = ex.map(nap, [0.05] * (40 * len(WORKERS)))
        assert next(results) == 0.05
        t0 = time.monotonic()
        results.close()
        assert list(ex.map(square, range(20_000))) == [x * x for x in range(20_000)]
        assert time.monotonic() - t0 < 1.5   # not the 2 s the rest of the naps would take
        mixed = ex.map(fail, [1] * 3000)
        with pytest.raises(ValueError, match="x=1 is unlucky"):
            next(mixed)


def test_wait_and_as_completed():
    with executor() as ex:
        if ex is None:
            return
        slow, fast = ex.submit(nap, 0.5), ex.submit(nap, 0.0)
        first = next(cf.as_completed([slow, fast], timeout=10))
        if comm.size > 2:   # another worker takes the fast one while the slow one runs
            assert first is fast
        done, not_done = cf.wait([slow, fast], timeout=10)
        assert done == {slow, fast} and not not_done


def test_submitting_while_earlier_tasks_run():
    with executor() as ex:
        if ex is None:
            return
        slow = ex.submit(nap, 0.5)
        time.sleep(0.05)
        assert not slow.done()
        later = ex.submit(square, 3)
        assert later.result(timeout=10) == 9
        assert slow.done() == (comm.size == 2)   # one worker: behind the slow task
        assert slow.result(timeout=10) == 0.5


def test_ten_thousand_futures_complete():
    with executor() as ex:
        if ex is None:
            return
        futures = [ex.submit(square, i) for i in range(10_000)]
        done, not_done = cf.wait(futures, timeout=50)
        assert not not_done
        assert [f.result() for f in futures] == [i * i for i in range(10_000)]


def test_shutdown_cancels_queued_futures_and_refuses_new_ones():
    with executor() as ex:
        if ex is None:
            return
        futures = [ex.submit(nap, 0.01) for _ in range(200)]
        ex.shutdown(wait=True, cancel_futures=True)
        assert all(f.done() for f in futures)
        assert any(f.cancelled() for f in futures)
        assert all(f.result() == 0.01 for f in futures if not f.cancelled())
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(square, 1)


def test_a_function_that_does_not_pickle_fails_at_submit():
    with executor() as ex:
        if ex is None:
            return
        with pytest.raises(pickle.PicklingError, match="<lambda>"):
            ex.submit(lambda x: x, 1)
        assert ex.submit(square, 2).result(timeout=10) == 4


def test_executor_context_manager_on_every_rank():
    got, results = [], []
    for _ in range(3):   # again and again: the ranks serve each time
        with executor() as ex:
            got.append(ex)
            if ex is not None:
                results.append(ex.submit(square, 5).result(timeout=10))
    # asserted after the blocks: a rank leaving the loop early would miss the next block
    if comm.rank == 0:
        assert all(isinstance(ex, Executor) for ex in got) and results == [25, 25, 25]
        with pytest.raises(RuntimeError, match="after shutdown"):
            got[0].submit(square, 1)
    else:
        assert got == [None, None, None]


def test_executor_on_a_serving_rank_is_refused():
    if comm.rank != 0:
        with pytest.raises(RuntimeError, match="rank 0"):
            Executor()


def test_parallel_map_returns_the_loop_on_every_rank():
    assert parallel_map(square, range(100)) == [x * x for x in range(100)]
    assert parallel_map(nested, [3, 4]) == [[0, 1, 4], [0, 1, 4, 9]]   # tasks map serially


def test_parallel_map_raises_the_first_failure_on_every_rank():
    with pytest.raises(ValueError, match="x=0 is unlucky") as info:
        parallel_map(fail, range(5))
    assert "failed on rank " in str(info.value.__cause__)
    with pytest.raises(pickle.PicklingError, match="<lambda>"):
        parallel_map(lambda x: x, range(3))
