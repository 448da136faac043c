"""The Python API and the engine on one rank (in-process, no mpiexec)."""
import pytest

from mtcmpi.faults import Stop, StopKind

import mtcmpi
from mtcmpi import report
from mtcmpi.job import run_job
from mtcmpi.options import RunOptions
from mtcmpi.tasklog import FAILED, OK, STATUS_NAMES, TaskLog, TaskStatus
from mtcmpi.tasks import CountSource
from mtcmpi.world import World
from tests import tasks_for_tests as t

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("schedule", ["static", "static:cyclic", "dynamic", "guided"])
def test_run_returns_results_in_order(schedule):
    assert mtcmpi.run(t.square, range(50), schedule=schedule) == [x * x for x in range(50)]


def test_run_unpacks_tuples_and_dicts():
    assert mtcmpi.run(t.add, [(1, 2), (3, 4)], star=True) == [3, 7]
    assert mtcmpi.run(t.add, [{"a": 1}, {"a": 2, "b": 5}], star=True) == [1, 7]


def test_zero_tasks():
    assert mtcmpi.run(t.square, []) == []


def test_failures_raise_with_remote_traceback():
    with pytest.raises(mtcmpi.TasksFailed) as info:
        mtcmpi.run(t.maybe_fail, range(10))
    err = info.value
    assert sorted(err.failures) == [3, 8]
    assert err.results[4] == 4 and err.results[3] is None
    assert "task 3 failed on rank 0" in str(err) and "x=3 is unlucky" in str(err)
    assert "tasks_for_tests.py" in err.failures[3].traceback
    assert "tasklog.py" not in err.failures[3].traceback   # mtcmpi's own frames are cut


def test_system_exit_in_a_task_is_a_failure_not_an_exit():
    with pytest.raises(mtcmpi.TasksFailed) as info:
        mtcmpi.run(t.exits, range(2))
    assert {f.type for f in info.value.failures.values()} == {"SystemExit"}


def test_summary_counts_and_groups_failures():
    outcome = run_job(World.of(), "tests.tasks_for_tests:maybe_fail", CountSource(20))
    s = outcome.summary
    assert (outcome.n, s.total.ok, s.total.failed, outcome.exit_code) == (20, 16, 4, 1)
    text = "\n".join(s.lines())
    assert "20 tasks on 1 ranks" in text and "16 ok, 4 failed" in text
    assert "ValueError x4 (first: task 3: x=3 is unlucky)" in text


def test_task_log_records_every_task():
    log = TaskLog(0, "h", 1)
    n, failed, busy = log.run([(5, 1), (6, 3), (7, 2)], t.maybe_fail, lambda: 1.0, Stop())
    assert (n, failed, list(log.ids), list(log.status)) == (3, 1, [5, 6, 7], [OK, FAILED, OK])
    assert log.results == {5: 1, 7: 2} and log.failures[6].type == "ValueError"


def test_merge_keeps_the_lowest_failing_task_as_example():
    a, b = TaskLog(0, "h", 1), TaskLog(1, "h", 2)
    a.run([(9, 3)], t.maybe_fail, lambda: 0.0, Stop())
    b.run([(3, 3), (4, 4)], lambda x: t.maybe_fail(x), lambda: 0.0, Stop())
    merged = report.merge([report.condense(a), report.condense(b)])
    assert merged.failures["ValueError"][:2] == [2, 3] and merged.ok == 1


def test_an_exception_with_its_own_status_attribute_is_a_plain_failure():
    class HTTPError(Exception):
        status = 404
    log = TaskLog(0, "h", 1)

    def raise_it(x):
        raise HTTPError("not found")
    log.run([(0, 0)], raise_it, lambda: 0.0, Stop())
    assert list(log.status) == [FAILED]


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_retries_on_one_rank_count_attempts_once_per_task(tmp_path, schedule):
    from mtcmpi.tasks import ItemsSource
    import h5py
    seen = set()

    def flaky(x):
        if x % 3 == 0 and x not in seen:
            seen.add(x)
            raise RuntimeError(f"first try of {x}")
        return x
    out = tmp_path / "r.h5"
    outcome = run_job(World.of(), flaky, ItemsSource(range(9)),
                      RunOptions(schedule=schedule, out=str(out), retries=1))
    assert outcome.exit_code == 0 and outcome.summary.total.ok == 9 and outcome.summary.total.failed == 0
    with h5py.File(out) as f:
        assert f["tasks"]["attempts"][:].tolist() == [2, 1, 1] * 3
        assert f["results/value"][:].tolist() == list(range(9))
        tries = f["attempts"][:]                       # every try, the failed ones too
        assert sorted(tries["task"].tolist()) == sorted(list(range(9)) + [0, 3, 6])
        assert sorted(tries["status"].tolist()) == [1] * 9 + [2] * 3


@pytest.mark.parametrize("kind, code", [(StopKind.SIGNAL, 75), (StopKind.WALLTIME, 75),
                                        (StopKind.MAX_FAILURES, 1)])
def test_a_stopped_run_asks_to_be_resumed_unless_failures_stopped_it(kind, code):
    total = report.Part(ran=5, ok=4, failed=1, stopped="why", stop_kind=kind)
    assert report.Summary(10, 2, 1, "dynamic", 0.0, 1.0, total).exit_code() == code


def test_task_status_keeps_the_codes_of_the_results_file():
    assert [int(s) for s in TaskStatus] == [0, 1, 2, 3, 4, 5]
    assert STATUS_NAMES == {0: "not-run", 1: "ok", 2: "failed", 3: "skipped", 4: "timeout", 5: "crashed"}
