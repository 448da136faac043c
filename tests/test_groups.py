"""Parallel tasks (mtcmpi/groups.py): packing in the model, and Python functions on k ranks end
to end under mpiexec (at most 4 ranks: 3 workers)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from mtcmpi import plots
from mtcmpi.groups import GroupSpec, Placement, Scheduler
from mtcmpi.errors import UsageError
from mtcmpi.options import RunOptions
from mtcmpi.output.members import members_of, members_text, read_groups
from tests.helpers import mtcmpi

pytestmark = pytest.mark.timeout(120)
TASKS = "tests.tasks_for_groups"


def test_members_text_round_trips():
    for members in ([1], [1, 2, 3, 4], [3, 4, 7], [9, 2, 3]):
        assert members_of(members_text(members)) == members
    assert members_text([1, 2, 3, 4, 7]) == "1-4,7"
    assert plots.contiguous([3, 4, 7]) == [(3, 2), (7, 1)]   # a bar per run of rows


def test_a_group_takes_one_host_when_one_has_room_else_the_fewest_hosts():
    hosts = {r: f"n{(r - 1) // 4}" for r in range(1, 13)}   # 3 hosts of 4 ranks
    place = Placement(hosts)
    first = place.take(3)
    assert {hosts[r] for r in first} == {"n0"}
    two = place.take(2)   # n0 has 1 free, n1 and n2 4: a whole host, not a split
    assert len({hosts[r] for r in two}) == 1 and hosts[two[0]] != "n0"
    six = place.take(6)   # 1 + 2 + 4 free: the hosts with the most free first, two of them
    assert len({hosts[r] for r in six}) == 2 and len(six) == 6
    assert place.take(2) is None and place.count == 1
    place.give(first)
    assert place.count == 4 and place.take(4) is not None


def test_largest_first_then_backfill_and_a_starving_task_is_protected():
    sched = Scheduler(Placement({r: "h" for r in range(1, 9)}), "backfill")
    for tid, size in enumerate([8, 4, 4, 1, 1, 1]):
        sched.add((tid, None), size)
    assert [(t, len(m)) for (t, _), m in sched.ready(0.0)] == [(0, 8)]
    sched.placement.give(range(1, 9))
    sched.done(10.0)
    started = sched.ready(10.0)
    assert sorted(len(m) for _, m in started) == [4, 4]
    # a wide task arrives behind a stream of small ones: it waits at most one mean task time
    sched.add((9, None), 8)
    sched.placement.give(started[0][1])   # 4 free
    assert {len(m) for _, m in sched.ready(11.0)} == {1}   # small ones backfill at first
    assert sched.blocked_since == 11.0
    sched.placement.give(range(1, 2))
    assert sched.ready(25.0) == []   # waited longer than the mean (10 s): no more overtaking
    strict = Scheduler(Placement({r: "h" for r in range(1, 5)}), "strict")
    strict.add((0, None), 4)
    strict.add((1, None), 1)
    strict.placement.take(1)
    assert strict.ready(0.0) == []


def test_the_options_refuse_bad_sizes_and_make_the_spec():
    with pytest.raises(UsageError, match="--ranks-per-task must be >= 1"):
        RunOptions(ranks_per_task=0)
    with pytest.raises(UsageError, match="not both"):
        RunOptions(ranks_per_task=2, ranks="n")
    with pytest.raises(UsageError, match="--packing 'fifo'"):
        RunOptions(ranks_per_task=2, packing="fifo")
    spec = RunOptions(ranks="nprocs", packing="strict").group_spec()
    assert spec == GroupSpec(None, "nprocs", "strict") and spec.given
    assert not RunOptions().group_spec().given


def test_functions_on_their_own_communicator(tmp_path):
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", f"{TASKS}:total", "--count", "5", "--ranks-per-task", "3", "--out",
                   str(out)], ranks=4)
    assert proc.returncode == 0, proc.stderr
    assert "5 ok, 0 failed" in proc.stdout and "parallel tasks" in proc.stdout
    with h5py.File(out) as f:
        x = np.arange(5)
        assert (f["results/sum"][:] == 3 * x + 3).all()   # x + rank over ranks 0, 1, 2
        assert (f["results/size"][:] == 3).all()
        assert (f["results/first"][:] == 1).all() and (f["results/last"][:] == 3).all()
        assert (f["tasks"]["ranks"][:] == 3).all() and (f["tasks"]["rank"][:] == 1).all()
        groups = read_groups(f)
    assert sorted(groups) == list(range(5)) and {g[0] for g in groups.values()} == {"1-3"}
    report = mtcmpi(["report", "--json", str(out)], ranks=None)
    assert report.returncode == 0 and '"working_ranks": 3' in report.stdout
    run = plots.load(str(out))   # one bar per task, spanning its three ranks' rows
    assert list(run.rank) == [1] * 5 and list(run.rows) == [3] * 5
    assert plots.efficiency(run) == pytest.approx(json.loads(report.stdout)["efficiency"])
    plots.plot_main(str(out), str(tmp_path / "g.png"), str(tmp_path / "u.png"))
    assert (tmp_path / "g.png").stat().st_size > 0


def test_a_size_per_task_from_a_column_packs_a_mix(tmp_path):
    params = tmp_path / "p.csv"
    params.write_text("x,nprocs\n" + "".join(f"{i},{1 + i % 3}\n" for i in range(9)))
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", f"{TASKS}:sized", "--params", str(params), "--ranks", "nprocs",
                   "--out", str(out)], ranks=4)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out) as f:
        sizes = 1 + np.arange(9) % 3
        assert (f["results/value"][:] == sizes * 1000 + np.arange(9)).all()
        assert (f["tasks"]["ranks"][:] == sizes).all()


def test_a_failure_on_one_member_fails_the_task_and_every_rank_goes_on(tmp_path):
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", f"{TASKS}:member_fails", "--count", "6", "--ranks-per-task", "2",
                   "--out", str(out)], ranks=4)
    assert proc.returncode == 1, proc.stderr
    assert "3 ok, 3 failed" in proc.stdout and "ValueError" in proc.stdout
    with h5py.File(out) as f:
        status = f["tasks"]["status"][:]
        trace = f["errors/traceback"].asstr()[1]
    assert list(status) == [1, 2] * 3
    assert "fails on group rank 1" in trace and "on rank 2" in trace   # the member's own traceback
    root = mtcmpi(["run", f"{TASKS}:root_fails", "--count", "2", "--ranks-per-task", "3"], ranks=4)
    assert root.returncode == 1 and "KeyError" in root.stdout and "2 failed" in root.stdout


@pytest.mark.parametrize("args, words", [
    (["--ranks-per-task", "4"], ["task 0 needs 4 ranks", "3 worker ranks"]),
    (["--ranks-per-task", "0"], ["--ranks-per-task must be >= 1"]),
    (["--ranks", "nprocs"], ["needs --params"]),
    (["--ranks", f"{TASKS}:ranks_of", "--timeout", "5"], ["--timeout", "child process"]),
])
def test_bad_sizes_are_one_line_and_exit_2(args, words):
    proc = mtcmpi(["run", f"{TASKS}:total", "--count", "3", *args], ranks=4)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mtcmpi: error")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr


def test_a_function_without_comm_is_refused_for_k_above_1(tmp_path):
    params = tmp_path / "p.csv"
    params.write_text("x,nprocs\n1,1\n2,two\n")
    bad = mtcmpi(["run", f"{TASKS}:sized", "--params", str(params), "--ranks", "nprocs"], ranks=2)
    assert bad.returncode == 2 and "row 1" in bad.stderr and "'two'" in bad.stderr
    proc = mtcmpi(["run", f"{TASKS}:no_comm", "--count", "3", "--ranks-per-task", "2"], ranks=3)
    assert proc.returncode == 2 and "no `comm` parameter" in proc.stderr, proc.stderr


def test_one_rank_alone_runs_tasks_of_one_rank_itself(tmp_path):
    proc = mtcmpi(["run", f"{TASKS}:total", "--count", "3", "--ranks-per-task", "1"], ranks=None)
    assert proc.returncode == 0 and "3 ok, 0 failed" in proc.stdout, proc.stderr
    plain = mtcmpi(["run", f"{TASKS}:total", "--count", "3"], ranks=None)   # no size: no comm
    assert plain.returncode == 2 and "missing a required argument: 'comm'" in plain.stderr
    params = tmp_path / "p.csv"
    params.write_text("x,comm\n1,2\n")   # a column called comm is an argument as ever
    out = tmp_path / "c.h5"
    column = mtcmpi(["run", f"{TASKS}:commission", "--params", str(params), "--out", str(out)],
                    ranks=2)
    assert column.returncode == 0, column.stderr
    with h5py.File(out) as f:
        assert f["results/value"][0] == 2 and "parallel" not in f.attrs["policy"]
    wide = mtcmpi(["run", f"{TASKS}:total", "--count", "3", "--ranks-per-task", "2"], ranks=None)
    assert wide.returncode == 2 and "needs 2 ranks but the job has 1 worker rank " in wide.stderr
