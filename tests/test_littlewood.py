"""Tests of kernels.littlewood: the batched eigvals grid against the numpy.roots reference."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from kernels import littlewood as lw

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("size", [37, 200])
@pytest.mark.parametrize("degree", [1, 2, 5, 8, 12])
def test_fast_grid_equals_reference(degree, size):
    fast = lw.hits(0, 2 ** degree, degree, size)
    assert fast.shape == lw.grid_shape(size)
    assert fast.dtype == np.int64
    assert fast.sum() > 0
    np.testing.assert_array_equal(fast, lw.reference_grid(degree, size))


def test_bit_convention_degree_2():
    # bit 0 is the constant term, a set bit means -1:
    # k=1: z^2 + z - 1, root 0.618; k=2: z^2 - z + 1, root 0.5 + 0.866i; k=3: z^2 - z - 1, 1.618
    expected = {0: [], 1: [(6, 0)], 2: [(5, 9)], 3: [(16, 0)]}
    for k, cells in expected.items():
        grid = lw.hits(k, k + 1, degree=2, size=10)
        assert sorted(map(tuple, np.argwhere(grid))) == cells
        assert grid.sum() == len(cells)


def test_imaginary_axis_root_counted_once():
    # k=0 of degree 3 is z^3 + z^2 + z + 1 = (z + 1)(z^2 + 1): only the root i is kept
    grid = lw.hits(0, 1, degree=3, size=50)
    assert grid[0, 50] == 1
    assert grid.sum() == 1


def test_grid_shape_round_trips():
    assert lw.grid_shape(200) == (421, 301)
    for size in (1, 2, 3, 10, 37, 199, 200, 1000):
        assert lw.grid_size(lw.grid_shape(size)) == size
    with pytest.raises(ValueError):
        lw.grid_size((10, 10))


def test_chunks_sum_to_whole():
    degree, size = 10, 60
    whole = lw.hits(0, 2 ** degree, degree, size)
    cuts = [0, 1, 2, 100, 513, 1000, 2 ** degree]
    parts = [lw.hits(a, b, degree, size) for a, b in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(sum(parts), whole)
    assert lw.hits(5, 5, degree, size).sum() == 0


@pytest.mark.parametrize("tasks", [1, 7, 64, 1024])
def test_task_chunks_cover_range_once(tasks):
    degree = 10
    numbers = [k for i in range(tasks) for k in lw.chunk(i, tasks, degree)]
    assert numbers == list(range(2 ** degree))
    with pytest.raises(ValueError):
        lw.chunk(tasks, tasks, degree)


def test_task_grids_sum_to_whole():
    degree, size, tasks = 9, 40, 7
    total = sum(lw.task(i, degree, size, tasks) for i in range(tasks))
    np.testing.assert_array_equal(total, lw.hits(0, 2 ** degree, degree, size))


def test_task_defaults_match_count_64():
    first = lw.task(0)
    np.testing.assert_array_equal(first, lw.hits(0, 1024, 16, 200))


def test_hits_rejects_bad_range():
    with pytest.raises(ValueError):
        lw.hits(0, 2 ** 4 + 1, degree=4, size=10)
    with pytest.raises(ValueError):
        lw.hits(3, 2, degree=4, size=10)


def test_params_csv_round_trip(tmp_path):
    path = tmp_path / "params.csv"
    assert lw.main(["--degree", "8", "--size", "30", "--tasks", "5", "--params", str(path)]) == 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["start", "stop", "degree", "size"]
        rows = [{key: int(value) for key, value in row.items()} for row in reader]
    assert rows == lw.params(8, 30, 5)
    assert rows[0]["start"] == 0 and rows[-1]["stop"] == 256
    total = sum(lw.hits(**row) for row in rows)
    np.testing.assert_array_equal(total, lw.hits(0, 256, 8, 30))


def test_render_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    grid_path, png_path = tmp_path / "grid.npy", tmp_path / "grid.png"
    assert lw.main(["--degree", "8", "--size", "50", "--grid", str(grid_path)]) == 0
    np.testing.assert_array_equal(np.load(grid_path), lw.hits(0, 256, 8, 50))
    assert lw.main(["--render", str(grid_path), "--png", str(png_path)]) == 0
    with open(png_path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert png_path.stat().st_size > 1000


def test_cli_needs_an_action():
    with pytest.raises(SystemExit):
        lw.main(["--degree", "3"])


@pytest.mark.parametrize("size", [37, 200])
@pytest.mark.parametrize("degree", [1, 2, 3, 5, 8])
def test_orbit_grid_equals_reference(degree, size):
    np.testing.assert_array_equal(lw.orbit_hits(0, 2 ** degree, degree, size),
                                  lw.reference_grid(degree, size))


@pytest.mark.parametrize("degree", [4, 9, 10, 11, 12, 13, 14])
def test_orbit_grid_equals_hits(degree):
    np.testing.assert_array_equal(lw.orbit_hits(0, 2 ** degree, degree, 200),
                                  lw.hits(0, 2 ** degree, degree, 200))


@pytest.mark.parametrize("degree", [1, 2, 5, 8])
def test_partners_have_the_transformed_roots(degree):
    numbers = np.arange(2 ** degree, dtype=np.int64)

    def roots(k):
        return np.sort_complex(np.roots([1] + [-1 if k >> j & 1 else 1 for j in range(degree - 1, -1, -1)]))
    for k, neg, rec in zip(numbers, lw.negated(numbers, degree), lw.reciprocal(numbers, degree)):
        np.testing.assert_allclose(roots(neg), np.sort_complex(-roots(k)), atol=1e-6)
        np.testing.assert_allclose(roots(rec), np.sort_complex(1 / roots(k)), atol=1e-6)


@pytest.mark.parametrize("degree", [1, 2, 3, 10, 11])
def test_orbits_cover_every_polynomial_once(degree):
    own, neg, rec, negrec = lw.orbits(np.arange(2 ** degree, dtype=np.int64), degree)
    four = (rec != own) & (rec != neg)
    members = np.concatenate([own, neg, rec[four], negrec[four]])
    np.testing.assert_array_equal(np.sort(members), np.arange(2 ** degree))


def test_representatives_spread_evenly():
    degree = 16
    own = lw.orbits(np.arange(2 ** degree, dtype=np.int64), degree)[0]
    per_eighth = np.bincount(own >> (degree - 3), minlength=8)
    assert per_eighth.max() < 1.05 * per_eighth.mean()    # so equal ranges are equal work


def test_orbit_chunks_sum_to_whole():
    degree, size = 10, 60
    cuts = [0, 1, 2, 100, 513, 1000, 2 ** degree]
    parts = [lw.orbit_hits(a, b, degree, size) for a, b in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(sum(parts), lw.hits(0, 2 ** degree, degree, size))
    with pytest.raises(ValueError):
        lw.orbit_hits(0, 2 ** 4 + 1, degree=4, size=10)


def test_direct_fallback_gives_the_same_grid(monkeypatch):
    degree, size = 9, 50
    calls = []
    eigvals = np.linalg.eigvals
    monkeypatch.setattr(np.linalg, "eigvals", lambda m: calls.append(len(m)) or eigvals(m))
    lw.orbit_hits(0, 2 ** degree, degree, size)
    assert sum(calls) < 2 ** degree // 3                 # most roots are derived
    calls.clear()
    monkeypatch.setattr(lw, "TOL", 1.0)                  # every derived root is near a boundary
    np.testing.assert_array_equal(lw.orbit_hits(0, 2 ** degree, degree, size),
                                  lw.hits(0, 2 ** degree, degree, size))
    assert sum(calls) == 2 * 2 ** degree                 # all computed directly (plus hits itself)
