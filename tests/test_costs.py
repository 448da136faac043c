"""Cost-aware scheduling: costs from a column, a function or an earlier run; LPT and longest first."""
import itertools

import h5py
import numpy as np
import pytest

from mtcmpi.costs import CostSpec, from_column, from_function, longest_first, lpt
from mtcmpi.errors import UsageError
from mtcmpi.tasks import CountSource, ParamsSource
from tests.helpers import mtcmpi

pytestmark = pytest.mark.timeout(120)


def test_lpt_balances_and_keeps_each_share_ascending():
    rng = np.random.default_rng(1)
    costs = rng.uniform(27, 33, 120)
    parts = lpt(np.arange(120), costs, 12)
    assert sorted(np.concatenate(parts).tolist()) == list(range(120))
    assert all((np.diff(p) > 0).all() for p in parts)
    loads = [costs[p].sum() for p in parts]
    assert max(loads) / np.mean(loads) < 1.01   # count-based blocks: ~1.04 on such draws
    blocks = [costs[i * 10:(i + 1) * 10].sum() for i in range(12)]
    assert max(loads) < max(blocks)


def test_lpt_is_optimal_on_a_small_case_where_it_is_known_to_be():
    costs = np.array([5.0, 5, 4, 4, 3, 3, 3])   # 27 over 3 ranks: 9 each is possible
    best = min(max(sum(costs[list(g)]) for g in groups)
               for groups in partitions(range(7), 3))
    assert best == 9
    loads = [costs[p].sum() for p in lpt(np.arange(7), costs, 3)]
    assert max(loads) <= best * 4 / 3   # Graham's bound; here LPT gets 11 vs 9


def partitions(items, k):
    """Every assignment of items to k groups (tiny inputs only)."""
    items = list(items)
    for owners in itertools.product(range(k), repeat=len(items)):
        yield [[i for i, o in zip(items, owners) if o == g] for g in range(k)]


def test_longest_first_orders_a_subset_by_falling_cost_and_ties_by_id():
    costs = np.array([1.0, 3, 2, 3, 0])
    assert longest_first(np.array([0, 2, 3, 4]), costs).tolist() == [3, 2, 0, 4]
    assert longest_first(range(5), costs).tolist() == [1, 3, 2, 0, 4]


def test_costs_from_a_column_and_from_a_function(tmp_path):
    path = tmp_path / "scan.csv"
    path.write_text("x,steps\n1,10\n2,30\n3,20\n")
    assert from_column(ParamsSource(str(path)), "steps").tolist() == [10, 30, 20]
    assert from_function(ParamsSource(str(path)), "tests.tasks_for_tests:add_steps").tolist() == [11, 32, 23]
    assert from_function(CountSource(3), "tests.tasks_for_tests:square").tolist() == [0, 1, 4]


@pytest.mark.parametrize("text,given,message", [
    ("x,steps\n1,10\n2,abc\n", "steps", "'abc', not a number"),
    ("x,steps\n1,10\n", "time", "no column 'time'"),
    ("x,steps\n1,10\n2,-1\n", "steps", "costs must be finite numbers >= 0"),
    ("x,steps\n1,10\n", "tests.tasks_for_tests:fail", "failed on row 0"),
])
def test_bad_costs_name_the_row_and_what_is_wrong(tmp_path, text, given, message):
    path = tmp_path / "scan.csv"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        CostSpec(given).estimate(ParamsSource(str(path)), 2, "", None)


def test_a_column_needs_a_params_file():
    with pytest.raises(UsageError, match="needs --params"):
        from_column(CountSource(3), "steps")


def run_scan(tmp_path, csv, *args, ranks=3):
    (tmp_path / "scan.csv").write_text(csv)
    return mtcmpi(["run", "tests.tasks_for_tests:nap_steps", "--params", str(tmp_path / "scan.csv"),
                   *args], ranks=ranks, cwd=str(tmp_path))


def order_of_starts(path):
    with h5py.File(path) as f:
        table = f["tasks"][:]
    return np.argsort(table["start"], kind="stable").tolist(), table


SCAN = "steps,pad\n" + "".join(f"{s},{i}\n" for i, s in enumerate([1, 5, 2, 8, 3, 7, 4, 6]))


@pytest.mark.e2e
def test_dynamic_with_a_cost_column_hands_out_the_longest_tasks_first(tmp_path):
    proc = run_scan(tmp_path, SCAN, "--cost", "steps", "--out", "a.h5")
    assert proc.returncode == 0, proc.stderr
    assert "longest first" in proc.stdout
    order, _ = order_of_starts(tmp_path / "a.h5")
    assert order[:2] in ([3, 5], [5, 3])   # steps 8 and 7 start first, one on each worker


@pytest.mark.e2e
def test_static_with_costs_gives_every_rank_the_same_total(tmp_path):
    scan = "steps,pad\n" + "".join(f"{s},{i}\n" for i, s in enumerate([9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]))
    proc = run_scan(tmp_path, scan, "--cost", "steps", "--schedule", "static", "--out", "s.h5")
    assert proc.returncode == 0, proc.stderr
    assert "equal-cost shares" in proc.stdout
    _, table = order_of_starts(tmp_path / "s.h5")
    steps = np.array([9] + [1] * 17)
    loads = sorted(steps[table["rank"] == r].sum() for r in range(3))
    assert loads == [8, 9, 9]   # blocks of 6 would give 6, 6, 14


@pytest.mark.e2e
def test_costs_from_an_earlier_run_match_by_id_or_by_arguments(tmp_path):
    first = run_scan(tmp_path, SCAN, "--out", "first.h5")
    assert first.returncode == 0, first.stderr
    same = run_scan(tmp_path, SCAN, "--costs-from", "first.h5", "--out", "same.h5")
    assert same.returncode == 0, same.stderr
    assert order_of_starts(tmp_path / "same.h5")[0][:2] in ([3, 5], [5, 3])
    lines = SCAN.splitlines()   # the same rows, reversed, plus one the first run never saw
    moved = "\n".join([lines[0], *reversed(lines[1:]), "5,99"]) + "\n"
    again = run_scan(tmp_path, moved, "--costs-from", "first.h5", "--out", "moved.h5")
    assert again.returncode == 0, again.stderr
    order, _ = order_of_starts(tmp_path / "moved.h5")
    assert order[:2] in ([2, 4], [4, 2])   # steps 8 and 7 are rows 4 and 2 now


@pytest.mark.e2e
@pytest.mark.parametrize("args,message", [
    (["--cost", "nope"], "no column 'nope'"),
    (["--cost", "steps", "--schedule", "static:cyclic"], "static:cyclic deals tasks by number"),
    (["--costs-from", "missing.h5"], "no such results file"),
    (["--cost", "steps", "--costs-from", "x.h5"], "not both"),
])
def test_bad_cost_options_stop_every_rank_with_one_message(tmp_path, args, message):
    proc = run_scan(tmp_path, SCAN, *args)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("mtcmpi: error") == 1
    assert "Traceback" not in proc.stderr


def test_a_moved_csv_row_keeps_its_key(tmp_path):
    import hashlib

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("x,y\n1,2\n3,4\n")
    b.write_text("x,y\n3,4\n1,2\n")
    keys_a = ParamsSource(str(a)).fingerprint(hashlib.sha256())
    keys_b = ParamsSource(str(b)).fingerprint(hashlib.sha256())
    assert keys_a.tolist() == keys_b[::-1].tolist() and keys_a[0] != keys_a[1]
