"""Issue 14's table: what a driver sees under `mtcmpi exec` on 1, 2 and 3 ranks, one test per
row. The driver (tests/drivers/executor_rows.py) runs every row once per rank count, each row
with its own Executor and deadlines; these tests assert on what it printed."""
from __future__ import annotations

import json
import os
import re

import pytest

from tests.helpers import ROOT, mtcmpi

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
DRIVER = os.path.join(ROOT, "tests", "drivers", "executor_rows.py")
RANKS = [None, 2, 3]   # None: 1 rank, without mpiexec


@pytest.fixture(scope="module", params=RANKS, ids=["1rank", "2ranks", "3ranks"])
def rows(request, tmp_path_factory) -> dict:
    """Every row's report from one `mtcmpi exec` run at this many ranks; 'ranks' the count."""
    proc = mtcmpi(["exec", DRIVER, str(tmp_path_factory.mktemp("rows"))], ranks=request.param,
                  timeout=100)
    seen = {m[0]: json.loads(m[1]) for m in re.findall(r"^ROW (\S+) (.*)$", proc.stdout, re.M)}
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    seen["ranks"] = request.param or 1
    seen["workers"] = max(1, seen["ranks"] - 1)
    return seen


def row(rows: dict, name: str) -> dict:
    assert name in rows, f"row {name} did not report (the run ended before it)"
    assert "error" not in rows[name], rows[name]["error"]
    return rows[name]


def test_a_crashing_task_fails_its_own_future_and_the_rank_lives(rows):
    seen = row(rows, "crash")
    assert seen["crashed"][0].startswith("TaskCrashed: crashed, signal 11")
    assert seen["crashed"][1] == "TaskCrashed: crashed, exit status 3"
    assert seen["crashed"][2].startswith("TaskCrashed: crashed, signal 9")
    assert seen["after"] == 0


def test_a_result_that_exits_while_pickled_fails_its_future(rows):
    seen = row(rows, "exit_while_pickled")
    if rows["ranks"] > 1:   # one rank passes results as they are: nothing is pickled
        assert seen["bad"].startswith("PicklingError: the result (a ExitsWhenPickled) cannot be sent")
    assert seen["after"] == 0 and seen["seconds"] < 10


def test_a_result_that_exits_while_unpickled_fails_its_future(rows):
    seen = row(rows, "exit_while_unpickled")
    if rows["ranks"] > 1:
        assert seen["bad"].startswith("RemoteError: the result does not unpickle on rank 0: SystemExit")
    assert seen["after"] == 0


def test_one_result_that_does_not_unpickle_fails_one_future_of_21(rows):
    outcomes = row(rows, "one_bad_result_of_21")["outcomes"]
    bad = [o for o in outcomes if o != "ok"]
    assert len(bad) == (1 if rows["ranks"] > 1 else 0) and outcomes[10] == (bad[0] if bad else "ok")


def test_queued_calls_are_pending_and_cancel(rows):
    seen = row(rows, "cancel_behind_a_running_task")
    assert seen["slow_running"] and seen["queued_running"] == 0
    assert seen["cancelled"] >= 19 and seen["all_cancelled_done"]


def test_shutdown_cancel_futures_cancels_what_has_not_started(rows):
    seen = row(rows, "shutdown_cancel_futures")
    assert seen["done"] == 50
    assert seen["cancelled"] >= 50 - 2 * rows["workers"]   # stdlib: 46-48 with 2 workers


def test_closing_a_map_leaves_only_the_running_calls(rows):
    seen = row(rows, "map_closed_after_first")
    assert seen["ran"] <= 1 + 2 * rows["workers"]   # stdlib: 2 of 20 with 2 workers


def test_del_of_a_running_executor_shuts_it_down(rows):
    seen = row(rows, "del_then_new_executor")
    assert seen["dispatchers_left"] == 0 and seen["new"] == 0


def test_map_keeps_no_result_it_yielded(rows):
    seen = row(rows, "map_keeps_no_yielded_result")
    assert not seen["kept"] and seen["rest"] == 2


def test_many_submits_then_shutdown_returns(rows):
    seen = row(rows, "many_submits_then_shutdown")
    assert seen["done"] == 50 and seen["results"] == 50


def test_a_broken_executor_refuses_submit_with_broken_executor(rows):
    seen = row(rows, "submit_after_failure")
    assert seen["first"].startswith("BrokenExecutor: mtcmpi.Executor")
    assert "initializer failed" in seen["first"] and "no licence for the solver" in seen["first"]
    assert seen["later"].startswith("BrokenExecutor:") and seen["next"] == 0
