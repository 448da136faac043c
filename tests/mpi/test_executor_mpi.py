"""mtcmpi.Executor's suite, on any number of ranks: serially (1 rank, tasks in a thread; the
serial run collects it through tests/test_executor.py) and under `mpiexec -n 2` and `-n 4`.

Every test is collective: all ranks enter `with executor() as ex` (or mtcmpi.map) together,
rank 0 drives and asserts inside the block (a failed assertion still releases the serving
ranks), the others serve and assert only afterwards, so a failure never leaves a rank in a
block the others left.
"""
import asyncio
import concurrent.futures as cf
import os
import pickle
import threading
import time

import pytest
from mpi4py import MPI

from mtcmpi.futures import Executor, RemoteError, RemoteTraceback, executor, parallel_map
from tests.tasks_for_tests import fail, nap

pytestmark = [pytest.mark.timeout(60)]
comm = MPI.COMM_WORLD
WORKERS = range(1, comm.size) if comm.size > 1 else range(1)   # ranks that run tasks
INITS: list = []   # what initializer() saw, in this process


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


class Nasty(Exception):
    """Everything that formats it raises: str(), repr() and its notes."""

    def __str__(self):
        raise KeyboardInterrupt("str")

    def __repr__(self):
        raise SystemExit("repr")

    @property
    def __notes__(self):
        raise SystemExit("notes")


def raise_nasty(x):
    raise Nasty()


def lock(x):
    return threading.Lock() if x == 2 else x


def nested(n):
    return parallel_map(square, range(n))


def raise_base(name):
    raise {"SystemExit": SystemExit(3), "KeyboardInterrupt": KeyboardInterrupt(),
           "GeneratorExit": GeneratorExit(), "CancelledError": asyncio.CancelledError()}[name]


def initializer(token):
    INITS.append(token)


def inits(token):
    return comm.rank, INITS.count(token)


def touch_and_nap(path, seconds):
    open(path, "a").close()
    time.sleep(seconds)
    return seconds


def wait_until(condition, timeout=10.0):
    """Wait until condition() is true, at most timeout seconds; True if it became true."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def test_results_come_from_every_worker():
    pids = comm.allgather(os.getpid())
    with executor() as ex:
        if ex is None:
            return
        assert set(ex.map(rank_after, [0.02] * (6 * len(WORKERS)))) == set(WORKERS)
        assert (pids[0] in set(ex.map(pid, range(50)))) == (comm.size == 1)
        assert ex.num_workers == len(WORKERS)


def test_submit_returns_a_standard_future_with_the_result():
    with executor() as ex:
        if ex is None:
            return
        future = ex.submit(square, 9)
        assert isinstance(future, cf.Future)
        assert future.result(timeout=10) == 81
        assert future.done() and not future.cancelled()
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
            assert f"task {i} failed on rank {WORKERS[0] if len(WORKERS) == 1 else ''}" in text
            assert "host " in text and "pid " in text and "in fail" in text
            assert "ValueError: x=" in text and "mtcmpi/futures" not in text   # the user's frames
        assert set(ex.map(rank_after, [0.02] * (6 * len(WORKERS)))) == set(WORKERS)


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "CancelledError"])
def test_any_base_exception_of_a_task_fails_its_future_only(name):
    with executor() as ex:
        if ex is None:
            return
        exc = ex.submit(raise_base, name).exception(timeout=10)
        assert type(exc).__name__ == name
        assert ex.submit(square, 3).result(timeout=10) == 9


def test_a_task_whose_exception_cannot_be_described_fails_its_future_only():
    with executor() as ex:
        if ex is None:
            return
        exc = ex.submit(raise_nasty, 1).exception(timeout=10)
        assert type(exc).__name__ == "Nasty"
        assert "Nasty: <exception str() failed>" in str(exc.__cause__)
        assert ex.submit(square, 2).result(timeout=10) == 4


def test_what_does_not_travel_back_fails_its_own_task_only():
    with executor() as ex:
        if ex is None:
            return
        with pytest.raises(RemoteError, match="Picky: 4") as info:
            ex.submit(raise_picky, 4).result(timeout=10)
        assert "in raise_picky" in str(info.value.__cause__)
        futures = [ex.submit(lock, i) for i in range(5)]
        cf.wait(futures, timeout=10)
        if comm.size > 1:   # one rank passes results as they are: a lock is fine there
            with pytest.raises(pickle.PicklingError, match="result .* cannot be sent back to rank 0"):
                futures[2].result()
        assert [f.result() for i, f in enumerate(futures) if i != 2] == [0, 1, 3, 4]


def test_map_order_laziness_timeout_chunks_starmap_and_unordered():
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
        assert list(ex.map(pow, [2, 3], [5, 2])) == [32, 9]
        assert list(ex.starmap(pow, [(2, 5), (3, 2)], chunksize=2)) == [32, 9]
        came = list(ex.map(nap, [0.4, 0.0], unordered=True))
        assert sorted(came) == [0.0, 0.4] and (came[0] == 0.0 or len(WORKERS) == 1)


def test_map_raises_at_the_failing_item():
    with executor() as ex:
        if ex is None:
            return
        results = ex.map(fail, [1] * 3000)
        with pytest.raises(ValueError, match="x=1 is unlucky"):
            next(results)


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


def test_wait_and_as_completed():
    with executor() as ex:
        if ex is None:
            return
        slow, fast = ex.submit(nap, 0.5), ex.submit(nap, 0.0)
        first = next(cf.as_completed([slow, fast], timeout=10))
        assert first is (fast if len(WORKERS) > 1 else slow)   # else behind the slow one
        done, not_done = cf.wait([slow, fast], timeout=10)
        assert done == {slow, fast} and not not_done


def test_a_call_is_running_only_once_it_started():
    with executor() as ex:
        if ex is None:
            return
        slow = ex.submit(nap, 0.5)
        later = ex.submit(square, 3)
        assert wait_until(slow.running)
        assert later.result(timeout=10) == 9
        assert slow.done() == (len(WORKERS) == 1)   # one worker: behind the slow task
        assert slow.result(timeout=10) == 0.5


def test_ten_thousand_futures_complete():
    with executor() as ex:
        if ex is None:
            return
        futures = [ex.submit(square, i) for i in range(10_000)]
        done, not_done = cf.wait(futures, timeout=50)
        assert not not_done
        assert [f.result() for f in futures] == [i * i for i in range(10_000)]


def test_shutdown_cancels_what_has_not_started_and_refuses_new_calls():
    with executor() as ex:
        if ex is None:
            return
        slow = ex.submit(nap, 0.3)
        futures = [ex.submit(nap, 0.01) for _ in range(200)]
        assert wait_until(slow.running)
        ex.shutdown(wait=True, cancel_futures=True)
        assert slow.result() == 0.3   # it had started: it finishes
        assert sum(f.cancelled() for f in futures) >= 200 - 2 * len(WORKERS)
        assert all(f.result() == 0.01 for f in futures if not f.cancelled())
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(square, 1)
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.map(square, [1])


def test_shutdown_with_cancel_futures_cancels_a_pending_map(tmp_path_factory):
    path = os.path.join(str(tmp_path_factory.mktemp("map")), "started")
    with executor() as ex:
        if ex is None:
            return
        results = ex.map(touch_and_nap, [path] + [os.devnull] * 4 * len(WORKERS), [0.2] * (1 + 4 * len(WORKERS)))
        assert wait_until(lambda: os.path.exists(path))
        ex.shutdown(wait=False, cancel_futures=True)
        assert next(results) == 0.2   # the call that had started finishes
        with pytest.raises(cf.CancelledError):
            list(results)


def test_a_function_that_does_not_pickle_fails_at_submit_naming_it():
    with executor() as ex:
        if ex is None:
            return
        with pytest.raises(pickle.PicklingError, match="<lambda>.*module level"):
            ex.submit(lambda x: x, 1)

        def inner(x):
            return x
        with pytest.raises(pickle.PicklingError, match="inner"):
            ex.submit(inner, 1)
        with pytest.raises(pickle.PicklingError, match="arguments of a call of 'square'"):
            ex.submit(square, lambda: 0)
        assert ex.submit(square, 2).result(timeout=10) == 4


def test_initializer_runs_once_per_worker_and_max_workers_caps_the_ranks():
    with executor(initializer=initializer, initargs=("a",)) as ex:
        if ex is not None:
            seen = set(ex.map(inits, ["a"] * 40))
            assert {count for _, count in seen} == {1}
            assert {rank for rank, _ in seen} <= set(WORKERS)
    with executor(max_workers=1) as ex:
        if ex is not None:
            assert ex.num_workers == 1
            assert set(ex.map(rank_after, [0.01] * 10)) == {WORKERS[0]}


def test_bad_arguments_are_refused_with_value_errors():
    with pytest.raises(ValueError, match="intra-communicator|COMM_NULL"):
        with executor(MPI.COMM_NULL):
            pass
    if comm.size > 1:
        local = comm.Split(comm.rank % 2, comm.rank)
        inter = local.Create_intercomm(0, comm, 1 - comm.rank % 2, tag=7)
        with pytest.raises(ValueError, match="intra-communicator"):
            with executor(inter):
                pass
        inter.Free()
        local.Free()
    if comm.rank == 0:
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            Executor(MPI.COMM_SELF, max_workers=0)
        with pytest.raises(TypeError, match="initializer must be a callable"):
            Executor(MPI.COMM_SELF, initializer=3)


def test_executors_one_after_another_on_every_rank():
    got, results = [], []
    for _ in range(3):   # again and again: the ranks serve each time
        with executor() as ex:
            got.append(ex)
            if ex is not None:
                with pytest.raises(RuntimeError, match="already running"):
                    Executor(comm)
                results.append(ex.submit(square, 5).result(timeout=10))
    # asserted after the blocks: a rank leaving the loop early would miss the next block
    if comm.rank == 0:
        assert all(isinstance(ex, Executor) for ex in got) and results == [25, 25, 25]
        with pytest.raises(RuntimeError, match="after shutdown"):
            got[0].submit(square, 1)
    else:
        assert got == [None, None, None]
    assert not any(t.name == "mtcmpi-executor" for t in threading.enumerate())
    comm.Barrier()   # nothing of those Executors is left for the next (two probes: see worker.py)
    status = MPI.Status()
    left = comm.iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status) or comm.iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
    comm.Barrier()   # and no rank starts the next test's messages before every rank looked
    assert not left, f"rank {comm.rank}: a message from rank {status.source}, tag {status.tag}"


def test_executor_on_a_serving_rank_is_refused():
    if comm.rank != 0:
        with pytest.raises(RuntimeError, match="rank 0"):
            Executor()


def test_parallel_map_returns_the_loop_on_every_rank():
    assert parallel_map(square, range(100)) == [x * x for x in range(100)]
    assert parallel_map(square, iter([])) == []
    assert parallel_map(nested, [3, 4]) == [[0, 1, 4], [0, 1, 4, 9]]   # tasks map serially


def test_parallel_map_raises_the_first_failure_on_every_rank():
    with pytest.raises(ValueError, match="x=0 is unlucky") as info:
        parallel_map(fail, range(5))
    assert ("failed on rank " in str(info.value.__cause__)) == (comm.size > 1)   # else the loop
    if comm.size > 1:   # one rank runs the loop: nothing travels
        with pytest.raises(pickle.PicklingError, match="<lambda>"):
            parallel_map(lambda x: x, range(3))


def test_a_worker_that_cannot_serve_fails_its_calls_with_broken_executor(monkeypatch):
    """A worker whose loop fails (mtcmpi's own error, not a task's) tells rank 0: its calls
    fail with BrokenExecutor at once; with no worker left the Executor is broken; the next
    Executor works."""
    from mtcmpi.futures.worker import Worker

    def broken_loop(self):
        raise RuntimeError("the worker loop broke")
    if comm.rank == 1:
        monkeypatch.setattr(Worker, "run_pending", broken_loop)
    with executor() as ex:
        if ex is not None and comm.size > 1:
            futures = [ex.submit(nap, 0.01) for _ in range(4 * len(WORKERS))]
            cf.wait(futures, timeout=20)
            failed = [f for f in futures if f.exception() is not None]
            assert failed and all(isinstance(f.exception(), cf.BrokenExecutor) for f in failed)
            assert "its worker loop failed on rank 1" in str(failed[0].exception())
            if len(WORKERS) == 1:
                with pytest.raises(cf.BrokenExecutor):
                    ex.submit(nap, 0)
            else:
                assert ex.submit(rank_after, 0).result(timeout=10) != 1
    monkeypatch.undo()
    with executor() as ex:
        if ex is not None:
            assert ex.submit(square, 4).result(timeout=10) == 16


def test_a_failing_dispatcher_breaks_the_executor_without_a_hang(monkeypatch):
    from mtcmpi.futures import pool

    def broken(*args):
        raise RuntimeError("the dispatcher broke")

    def broken_with_a_call_queued(d):   # one rank: break once the call below is queued, not
        with d.wake:                    # before its submit() (that would refuse it instead)
            d.wake.wait_for(lambda: d.queue, timeout=20)
        broken()
    if comm.rank == 0:
        monkeypatch.setattr(pool.Dispatch, "settle", broken)
        monkeypatch.setattr(pool.Dispatcher, "run_locally", broken_with_a_call_queued)
    with executor() as ex:
        if ex is not None:
            future = ex.submit(square, 3)
            with pytest.raises(cf.BrokenExecutor, match="dispatcher failed"):
                future.result(timeout=20)
            with pytest.raises(cf.BrokenExecutor):
                ex.submit(square, 3)
    monkeypatch.undo()
    with executor() as ex:
        if ex is not None:
            assert ex.submit(square, 4).result(timeout=10) == 16


def test_dispatch_is_traced_at_debug_level_on_rank_0(caplog):
    caplog.set_level("DEBUG", logger="mtcmpi")
    with executor() as ex:
        if ex is not None:
            assert list(ex.map(square, range(10))) == [x * x for x in range(10)]
    if comm.rank == 0 and comm.size > 1:
        text = caplog.text
        assert "sent tasks 0-" in text and "Executor" in text and "ended on ranks" in text


# -- dataflow: values go from the rank that computed them to the rank that needs them --

UNPICKLED = []   # the ranks where a Counted value was unpickled, in this process


def counted(tag):
    UNPICKLED.append(comm.rank)
    return Counted(tag)


class Counted:
    """A value that notes every rank that unpickles it, and where it was made."""

    def __init__(self, tag, made_on=None):
        self.tag, self.made_on = tag, comm.rank if made_on is None else made_on

    def __reduce__(self):
        return counted_on, (self.tag, self.made_on)


def counted_on(tag, made_on):
    UNPICKLED.append(comm.rank)
    return Counted(tag, made_on)


def make(tag, seconds=0.0):
    time.sleep(seconds)
    return Counted(tag)


def use(*values):
    """Where this ran, and (tag, rank that made it) of each input."""
    return comm.rank, [(v.tag, v.made_on) for v in values]


def kept_here():
    """How many values this worker keeps for rank 0."""
    import gc

    from mtcmpi.futures.worker import Worker
    return sum(len(w.kept) for w in gc.get_objects() if isinstance(w, Worker))


def test_a_dependent_runs_where_its_input_is_kept_and_rank_0_never_sees_it():
    with executor() as ex:
        if ex is not None:
            value = ex.submit(make, "a")
            ran_on, inputs = ex.submit(use, value).result(timeout=20)
            assert inputs == [("a", ran_on)]          # ran on the rank that made it: no transfer
            assert UNPICKLED == []                     # rank 0 never unpickled it
            fetched = [0] if comm.size > 1 else []     # (one rank: the value is here already)
            assert value.result(timeout=20).tag == "a" and UNPICKLED == fetched   # result() unpickles rank 0's copy
            assert value.result().tag == "a" and UNPICKLED == fetched             # once
            UNPICKLED.clear()
            late = ex.submit(make, "b")
            ex.submit(use, late).result(timeout=20)
    if comm.rank == 0:   # a value still held at shutdown: rank 0 has its copy
        assert late.result().tag == "b" and UNPICKLED == ([0] if comm.size > 1 else [])
        UNPICKLED.clear()


def test_inputs_kept_on_two_workers_meet_worker_to_worker():
    with executor() as ex:
        if ex is not None:
            a, b = ex.submit(make, "a", 0.2), ex.submit(make, "b", 0.2)   # one per worker
            ran_on, inputs = ex.submit(use, a, b).result(timeout=20)
            made = dict(inputs)
            assert set(made) == {"a", "b"} and ran_on in made.values()
            if comm.size > 2:
                assert made["a"] != made["b"]          # so one value came from the other worker
            assert UNPICKLED == []                     # and not through rank 0


def test_dropped_futures_release_their_values_on_the_workers():
    with executor() as ex:
        if ex is not None and comm.size > 1:
            values = [ex.submit(make, i) for i in range(20)]
            cf.wait(values, timeout=20)
            assert sum(ex.submit(kept_here).result(timeout=20) for _ in WORKERS) > 0
            del values
            assert wait_until(lambda: sum(ex.submit(kept_here).result(timeout=20) for _ in WORKERS) == 0)


def test_failures_and_cancels_propagate_down_the_graph(tmp_path_factory):
    from mtcmpi.graph import DependencyError
    path = comm.bcast(str(tmp_path_factory.mktemp("gate") / "go") if comm.rank == 0 else None)
    with executor() as ex:
        if ex is not None:
            bad = ex.submit(fail, "broken input")
            below = ex.submit(use, ex.submit(use, bad))
            with pytest.raises(DependencyError, match="broken input") as err:
                below.result(timeout=20)
            assert err.value.failed.startswith("task ")
            gates = [ex.submit(touch_and_nap, path, 0.5) for _ in WORKERS]   # every worker busy
            middle = ex.submit(use, ex.submit(make, "m"), gates[0])
            last = ex.submit(use, middle)
            assert middle.cancel()
            done, _ = cf.wait([last], timeout=20)
            assert last in done and last.cancelled()
            assert ex.submit(use, ex.submit(make, "ok")).result(timeout=20)[1][0][0] == "ok"


def test_a_holder_that_broke_loses_no_finished_value(monkeypatch):
    """A worker that broke took none of its finished values with it: rank 0 got a pickled copy
    with the done notice (not unpickled until asked), so result() has the value and a dependent
    sent later runs elsewhere on that copy."""
    from mtcmpi.futures.worker import Worker

    def broken(self, tasks):
        if any(task[2] for task in tasks):
            raise RuntimeError("the worker loop broke")
        return tasks
    if comm.rank == 1:
        monkeypatch.setattr(Worker, "localized", broken)
    with executor() as ex:
        if ex is not None and comm.size > 1:
            value = ex.submit(make, "x")
            cf.wait([value], timeout=20)
            if value._result.worker == 1:   # (the first call goes to rank 1)
                with pytest.raises(cf.BrokenExecutor, match="its worker loop failed on rank 1"):
                    ex.submit(use, value).result(timeout=20)   # went to its holder, which broke
                assert (value.result(timeout=20).tag, value.result().made_on) == ("x", 1)
                if comm.size > 2:
                    ran_on, inputs = ex.submit(use, value).result(timeout=20)
                    assert ran_on != 1 and inputs == [("x", 1)]
    monkeypatch.undo()
    with executor() as ex:
        if ex is not None:
            assert ex.submit(use, ex.submit(make, "y")).result(timeout=10)[1][0][0] == "y"


def step(history, fail_at=None):
    """The history of a chain with this rank added; raises at length fail_at."""
    if len(history) == fail_at:
        raise ValueError(f"step {fail_at} failed")
    return history + [comm.rank]


@pytest.mark.parametrize("isolate", [False, True])
def test_a_chain_travels_behind_its_inputs_and_a_failure_in_it_names_the_failed_step(isolate):
    from mtcmpi.graph import DependencyError
    with executor(isolate=isolate) as ex:
        if ex is not None:
            value = []
            for _ in range(300):
                value = ex.submit(step, value)
            history = value.result(timeout=30)
            assert len(history) == 300 and len(set(history)) == 1   # one worker ran it all: no transfer
            number = 0
            for _ in range(200):   # plain values: they come back, and the worker keeps them for the next
                number = ex.submit(square, number) if number == 0 else ex.submit(pow, number, 1)
                number = ex.submit(int.__add__, number, 1)
            assert number.result(timeout=30) == 200
            if comm.size > 1:
                assert sum(ex.submit(kept_here).result(timeout=20) for _ in WORKERS) <= 2 * len(WORKERS)
            value = []
            for _ in range(50):
                value = ex.submit(step, value, 20)
            with pytest.raises(DependencyError, match="step 20 failed") as err:
                value.result(timeout=30)
            assert "step#" in err.value.failed or err.value.failed.startswith("task ")


def test_a_future_of_an_executor_that_ended_is_an_input_of_the_next():
    old = None
    with executor() as ex:
        if ex is not None:
            old = ex.submit(make, "old")
            pending = ex.submit(make, "pending", 0.3)
    with executor() as ex:
        if ex is not None:   # their values came to rank 0 when the first ended: they go inline
            ran_on, inputs = ex.submit(use, old, pending).result(timeout=20)
            assert [tag for tag, _ in inputs] == ["old", "pending"]
