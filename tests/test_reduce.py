"""Tests of mtcmpi.reduce: reductions over results files made by the engine in-process (one rank)."""
from __future__ import annotations

import numpy as np
import pytest

from kernels import littlewood as lw
from mtcmpi import reduce as rd
from mtcmpi.errors import UsageError
from mtcmpi.job import run_job
from mtcmpi.options import RunOptions
from mtcmpi.tasks import ItemsSource
from mtcmpi.world import World

pytestmark = pytest.mark.timeout(60)


def grid(x: int) -> np.ndarray:
    """A 2x3 int grid per task; tasks 3 and 8 fail, task 5 returns nothing."""
    if x in (3, 8):
        raise ValueError(f"task {x} fails")
    return None if x == 5 else np.arange(6, dtype=np.int64).reshape(2, 3) * (x - 4)


def pair(x: int) -> dict:
    return {"f": np.array([x / 4, -x]), "label": f"task {x}"}


def fails(x: int) -> int:
    raise RuntimeError("no luck")


def nan(x: int) -> float:
    """Every row holds only the fill value (NaN), as if no task had returned one."""
    return float("nan")


def make(tmp_path, fn, items, name: str = "r.h5", star: bool = False) -> str:
    path = str(tmp_path / name)
    run_job(World.of(), fn, ItemsSource(items, star), RunOptions(out=path))
    return path


def expected_rows() -> np.ndarray:
    return np.stack([grid(x) for x in range(10) if x not in (3, 5, 8)])


@pytest.mark.parametrize("op", rd.OPS)
def test_ops_over_successful_rows_equal_numpy(tmp_path, op):
    path = make(tmp_path, grid, range(10))
    got = rd.reduce(path, "value", op)
    want = getattr(np, op)(expected_rows(), axis=0)
    assert got.dtype == want.dtype and got.shape == (2, 3)
    np.testing.assert_array_equal(got, want)


def test_counts_leave_out_failed_tasks_and_rows_without_value(tmp_path):
    value, rows, tasks = rd.reduce_counted(make(tmp_path, grid, range(10)))
    assert (rows, tasks) == (7, 10)
    np.testing.assert_array_equal(value, expected_rows().sum(axis=0))


def test_small_blocks_give_the_same_answer(tmp_path, monkeypatch):
    path = make(tmp_path, pair, range(11))
    whole = {op: rd.reduce(path, "f", op) for op in rd.OPS}
    monkeypatch.setattr(rd, "BLOCK_BYTES", 40)     # 2 rows of 16 bytes a block
    for op, value in whole.items():
        np.testing.assert_allclose(rd.reduce(path, "f", op), value, rtol=1e-15)
    np.testing.assert_allclose(whole["mean"], [1.25, -5.0])


def test_littlewood_partial_grids_sum_to_the_whole(tmp_path):
    rows = lw.params(degree=8, size=30, tasks=5)
    path = make(tmp_path, lw.hits, rows, star=True)
    np.testing.assert_array_equal(rd.reduce(path), lw.hits(0, 256, 8, 30))


def test_errors_name_the_problem(tmp_path):
    path = make(tmp_path, pair, range(3))
    with pytest.raises(UsageError, match="no such results file"):
        rd.reduce(str(tmp_path / "nope.h5"), "f")
    with pytest.raises(UsageError, match="no results/hits; its keys: f, label"):
        rd.reduce(path, "hits")
    with pytest.raises(UsageError, match="unknown reduction 'median': use one of sum, mean, min, max"):
        rd.reduce(path, "f", "median")
    with pytest.raises(UsageError, match="holds strings"):
        rd.reduce(path, "label")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(UsageError, match="not an HDF5 file"):
        rd.reduce(str(tmp_path / "text.h5"))


def test_no_successful_rows(tmp_path):
    failed = make(tmp_path, fails, range(4), "failed.h5")
    with pytest.raises(UsageError, match="no results/value; it holds no results"):
        rd.reduce(failed)
    with pytest.raises(UsageError, match="no task that succeeded has a value under results/value"):
        rd.reduce(make(tmp_path, nan, range(3), "nan.h5"))


def test_main_prints_a_summary_and_saves(tmp_path, capsys):
    path = make(tmp_path, grid, range(10))
    out = str(tmp_path / "sum")
    assert rd.reduce_main(path, "value", "max", out) == 0
    text = capsys.readouterr().out
    assert "max of results/value over 7 of 10 tasks" in text and "shape (2, 3), dtype int64" in text
    assert "value: [[" in text and "saved to " + out + ".npy" in text
    np.testing.assert_array_equal(np.load(out + ".npy"), expected_rows().max(axis=0))
    with pytest.raises(UsageError, match="--save"):
        rd.reduce_main(path, out=str(tmp_path / "no" / "dir.npy"))


def test_main_shows_the_range_of_a_large_value(tmp_path, capsys):
    path = make(tmp_path, lw.hits, lw.params(degree=6, size=10, tasks=2), star=True)
    rd.reduce_main(path)
    text = capsys.readouterr().out
    assert f"shape {lw.grid_shape(10)}" in text and "min 0, max " in text and "value:" not in text
