"""Parallel tasks in-process on several ranks (scripts/test runs them under `mpiexec -n 4`)."""
import pytest

import mtcmpi
from mtcmpi.errors import UsageError
from mtcmpi.job import run_job
from mtcmpi.options import RunOptions
from mtcmpi.tasklog import FAILED, OK
from mtcmpi.tasks import ItemsSource
from mtcmpi.world import World
from tests import tasks_for_groups as g
from tests.mpi.common import comm, on_rank0

pytestmark = [pytest.mark.mpi(min_size=3), pytest.mark.timeout(60)]


def run(fn, items, **options):
    return run_job(World.of(), fn, ItemsSource(items), RunOptions(quiet=True, **options))


def everything(outcome) -> dict:
    """Every rank's records as {task id: (rank, status, result, members)}, on every rank."""
    log = outcome.log
    mine = {t: (log.rank, s, log.results.get(t), log.groups.get(t, ([log.rank], []))[0])
            for t, s in zip(log.ids, log.status)}
    return {t: r for part in comm.allgather(mine) for t, r in part.items()}


def test_each_group_allreduces_over_exactly_its_ranks():
    workers = comm.size - 1
    outcome = run(g.total, list(range(8)), ranks_per_task=2)
    records = everything(outcome)
    assert sorted(records) == list(range(8))
    for x, (rank, status, value, members) in records.items():
        assert status == OK and rank == members[0] and len(members) == 2
        assert value == {"sum": 2 * x + 1, "size": 2, "first": members[0], "last": members[1]}
        assert set(members) <= set(range(1, workers + 1))


@pytest.mark.mpi(min_size=4)   # tasks of up to 3 ranks
def test_a_size_per_task_from_a_function_and_a_failing_member():
    outcome = run(g.member_fails, list(range(6)), ranks=f"{g.__name__}:ranks_of")
    records = everything(outcome)
    for x, (_, status, value, members) in records.items():
        k = g.ranks_of(x)
        assert len(members) == k
        failed = bool(x % 2)   # on the last rank of its group (the root itself when k = 1)
        assert status == (FAILED if failed else OK), (x, status)
        assert failed or value == x * k
    failures = {t: f for part in comm.allgather(outcome.log.failures) for t, f in part.items()}
    assert failures[1].type == "ValueError" and "group rank 1" in failures[1].message
    assert outcome.exit_code == 1


def test_the_api_runs_tasks_on_k_ranks_and_returns_each_roots_value():
    results = mtcmpi.run(g.total, range(4), ranks_per_task=2)
    if comm.rank == 0:
        assert [r["sum"] for r in results] == [2 * x + 1 for x in range(4)]
        assert {r["size"] for r in results} == {2} and all(r["first"] >= 1 for r in results)
    else:
        assert results is None


def test_a_task_wider_than_the_workers_is_refused_on_every_rank():
    with pytest.raises(UsageError, match=f"needs {comm.size} ranks"):
        run(g.total, [1], ranks_per_task=comm.size)
    on_rank0(lambda: None)


@pytest.mark.mpi(min_size=4)
def test_ranks_of_a_running_program_and_idle_ranks_leave_the_cpu(tmp_path_factory):
    from tests.mpi.common import shared_tmp
    import resource
    import time

    from mtcmpi.commands import command_tasks

    folder = shared_tmp(tmp_path_factory, "cpu")
    if comm.rank == 0:
        with open(f"{folder}/args.txt", "w") as f:
            f.write("1.5\n")
    comm.Barrier()
    source, runner = command_tasks(command="sleep {}", args_file=f"{folder}/args.txt")
    used = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    outcome = run_job(World.of(), runner, source, RunOptions(ranks_per_task=2, quiet=True))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    cpus = comm.allgather(cpu)
    assert outcome.exit_code == 0 and wall >= 1.5
    # rank 1 runs the program (waiting on it), rank 2 is its other member, rank 3 idles: none of
    # them, nor the master, spins through the 1.5 s
    assert max(cpus) < 0.25 * wall, cpus   # measured: master 0.12 s, others 0.01 s of 1.6 s
