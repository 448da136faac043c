"""The engine on several ranks (run under `mpiexec -n 2` and `-n 4` by scripts/test)."""
import os

import pytest
import mtcmpi
from mtcmpi.errors import UsageError
from mtcmpi.job import run_job
from mtcmpi.options import RunOptions
from mtcmpi.tasks import CountSource
from mtcmpi.world import World
from tests import tasks_for_tests as t
from tests.mpi.common import comm, on_rank0

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(60)]
SCHEDULES = ["static", "static:cyclic", "dynamic", "guided", "guided:3"]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("n", [0, 1, 3, 257])
def test_every_schedule_gives_the_serial_results(schedule, n):
    results = mtcmpi.run(t.square, range(n), schedule=schedule)
    on_rank0(lambda: results == [x * x for x in range(n)] or fail(results))
    assert comm.rank == 0 or results is None


@pytest.mark.parametrize("chunk, prefetch", [(1, "0"), (1, "1"), (7, "2"), (None, "auto"), (1000, "1")])
def test_chunking_and_prefetch_lose_nothing(chunk, prefetch):
    results = mtcmpi.run(t.square, range(1000), chunk=chunk, prefetch=prefetch)
    on_rank0(lambda: results == [x * x for x in range(1000)] or fail(results))


def test_dynamic_work_runs_on_workers_only():
    pids = mtcmpi.run(t.where, range(40), schedule="dynamic")
    everyone = comm.allgather(os.getpid())
    on_rank0(lambda: set(pids) <= set(everyone[1:]) or fail(pids))


def test_static_work_runs_everywhere_including_rank_0():
    pids = mtcmpi.run(t.where, range(4 * comm.size), schedule="static")
    everyone = comm.allgather(os.getpid())
    on_rank0(lambda: set(pids) == set(everyone) or fail(pids))


def test_failures_are_agreed_on_every_rank():
    with pytest.raises(mtcmpi.TasksFailed) as info:
        mtcmpi.run(t.maybe_fail, range(20))

    def check():
        assert sorted(info.value.failures) == [3, 8, 13, 18]
        assert "on rank" in info.value.failures[3].traceback
    on_rank0(check)


def test_bad_target_raises_the_same_error_everywhere():
    with pytest.raises(UsageError, match="has no attribute 'nosuch'"):
        run_job(World.of(), "tests.tasks_for_tests:nosuch", CountSource(3))


def test_an_error_on_one_rank_only_is_agreed():
    world = World.of()
    with pytest.raises(UsageError, match="rank 1 says no"):
        world.agree("rank 1 says no" if world.rank == 1 else None)


def test_summary_counts_on_rank_0():
    outcome = run_job(World.of(), t.maybe_fail, CountSource(100), RunOptions(chunk=3))
    assert outcome.exit_code == 1
    on_rank0(lambda: (outcome.summary.total.ok, outcome.summary.total.failed, outcome.summary.total.ran,
                      outcome.summary.workers) == (80, 20, 100, comm.size - 1) or fail(outcome.summary))


def fail(got):
    raise AssertionError(f"unexpected: {got!r}")


@pytest.mark.mpi(min_size=3)
def test_retries_go_to_another_rank():
    outcome = run_job(World.of(), t.fails_on_rank_1, CountSource(30), RunOptions(chunk=1, retries=2))
    assert outcome.exit_code == 0
    on_rank0(lambda: (outcome.summary.total.ok, outcome.summary.total.failed) == (30, 0)
             and outcome.summary.total.retried > 0 or fail(outcome.summary.total))
    # every task that failed on rank 1 succeeded on another rank
    failed_here = set(outcome.log.failures) if comm.rank == 1 else set()
    ok_elsewhere = set(outcome.log.results) if comm.rank != 1 else set()
    failed, ok = set().union(*comm.allgather(failed_here)), set().union(*comm.allgather(ok_elsewhere))
    assert failed and failed <= ok


def test_zero_tasks_return_an_empty_list_on_rank_0_only():
    results = mtcmpi.run(t.square, [])
    assert results == ([] if comm.rank == 0 else None)
