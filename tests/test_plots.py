"""Plots from a results file: the numbers behind them exactly, the PNGs by size, and the missing-extra
error. Results files are synthetic, written here with h5py in the layout run --out writes."""
import shlex
import struct
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mtcmpi import plots
from mtcmpi.errors import UsageError
from mtcmpi.report import file_report
from tests.helpers import ROOT, run

pytestmark = pytest.mark.timeout(120)
T0 = 1.7e9


STATUS = h5py.enum_dtype({"not-run": 0, "ok": 1, "failed": 2, "skipped": 3, "timeout": 4, "crashed": 5},
                         basetype="i1")
ROW = np.dtype([("rank", np.int32), ("host", "S8"), ("pid", np.int64), ("start", np.float64),
                ("end", np.float64), ("status", STATUS), ("attempts", np.int16)])


def write_results(path, rank, start, end, status, ranks, policy="dynamic", columns=False):
    """A results file as mtcmpi.store writes it (/tasks a table, texts in /errors), or with
    columns=True /tasks as a group of column datasets; times are epoch seconds (T0 + given)."""
    n = len(rank)
    rows = np.zeros(n, ROW)
    rows["rank"], rows["status"], rows["host"], rows["pid"], rows["attempts"] = rank, status, b"node001", 7, 1
    rows["start"], rows["end"] = T0 + np.asarray(start, float), T0 + np.asarray(end, float)
    with h5py.File(path, "w") as f:
        f.attrs.update(ranks=ranks, policy=policy, n_tasks=n, start_time=T0,
                       end_time=T0 + np.fmax.reduce(np.asarray(end, float), initial=0.0) + 0.1)
        if columns:
            for name in ROW.names:
                f[f"tasks/{name}"] = rows[name]
        else:
            f["tasks"] = rows
        for name in ("type", "message", "traceback"):
            f.create_dataset(f"errors/{name}", data=[""] * n, dtype=h5py.string_dtype())
    return str(path)


def grid_run(path, ranks, per_rank, failed=(), not_run=()):
    """ranks x per_rank tasks of 0.5-1.5 s, back to back on each rank, task i on rank i % ranks."""
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.5, 1.5, (per_rank, ranks))
    end = np.cumsum(durations, axis=0).ravel()
    start = end - durations.ravel()
    rank = np.tile(np.arange(ranks), per_rank)
    status = np.ones(rank.size, np.int8)
    status[list(failed)] = 2
    gone = list(not_run)
    start[gone], end[gone], rank[gone], status[gone] = np.nan, np.nan, -1, 0
    return write_results(path, rank, start, end, status, ranks)


def png_size(png):
    """(width, height) from a PNG's header."""
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_busy_curve_counts_overlaps_exactly():
    times, counts = plots.busy_curve(np.array([0.0, 1.0, 2.0]), np.array([3.0, 2.0, 4.0]))
    assert times.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert counts.tolist() == [1, 2, 2, 1, 0]     # at 2.0 one task ends as another starts


def test_busy_curve_ignores_tasks_not_run_and_handles_none():
    times, counts = plots.busy_curve(np.array([np.nan, 5.0]), np.array([np.nan, 6.0]))
    assert times.tolist() == [5.0, 6.0] and counts.tolist() == [1, 0]
    times, counts = plots.busy_curve(np.array([np.nan]), np.array([np.nan]))
    assert len(times) == len(counts) == 0


def test_binned_keeps_the_area():
    times, counts = plots.busy_curve(np.array([0.0, 1.0]), np.array([2.0, 2.0]))   # 1 then 2 busy
    assert plots.binned(times, counts, np.array([0.0, 1.0, 2.0, 4.0])).tolist() == [1.0, 2.0, 0.0]
    assert plots.binned(times, counts, np.array([0.5, 1.5])).tolist() == [1.5]


def test_merge_bars_joins_close_bars_of_one_rank_only():
    rank = np.array([1, 0, 0, 0, 1])
    start = np.array([0.0, 2.05, 0.0, 1.0, 1.0])
    end = np.array([0.9, 3.0, 1.0, 2.0, 2.0])
    r, s, e, _ = plots.merge_bars(rank, start, end, gap=0.1)
    assert (r.tolist(), s.tolist(), e.tolist()) == ([0, 1], [0.0, 0.0], [3.0, 2.0])
    r, s, e, _ = plots.merge_bars(rank, start, end, gap=-np.inf)
    assert len(r) == 5 and e.tolist() == [1.0, 2.0, 3.0, 0.9, 2.0]


def test_load_drops_tasks_not_run_and_measures_from_the_run_start(tmp_path):
    path = grid_run(tmp_path / "r.h5", ranks=4, per_rank=3, failed=[1], not_run=[5, 7])
    run = plots.load(path)
    assert (run.ranks, run.policy, run.n_tasks, run.t0) == (4, "dynamic", 12, T0)
    assert len(run.rank) == 10 and np.isfinite(run.start).all() and run.start.min() == 0.0
    assert 0 < plots.efficiency(run) <= 1


def test_load_reads_a_group_of_columns_too(tmp_path):
    table = plots.load(grid_run(tmp_path / "t.h5", ranks=3, per_rank=2, not_run=[1]))
    path = write_results(tmp_path / "c.h5", [0, -1, 2], [0.0, np.nan, 1.0], [1.0, np.nan, 2.0], [1, 0, 2],
                         ranks=3, columns=True)
    columns = plots.load(path)
    assert columns.rank.tolist() == [0, 2] and columns.status.tolist() == [1, 2]
    assert table.status.dtype == columns.status.dtype == np.int8


def test_time_axis_units_and_seconds_in_titles():
    assert [plots.time_unit(s)[1].split()[0] for s in (0.5, 30, 600, 5 * 3600)] == \
        ["milliseconds", "seconds", "minutes", "hours"]
    assert [plots.seconds(s) for s in (0.005742, 18.94, 1481.5)] == ["0.00574 s", "18.9 s", "1,482 s"]


def test_efficiency_is_task_time_over_working_ranks_times_span_as_in_the_report(tmp_path):
    static = write_results(tmp_path / "s.h5", [0, 1], [1.0, 1.0], [3.0, 2.0], [1, 1], ranks=2,
                           policy="static")
    assert plots.efficiency(plots.load(static)) == pytest.approx(3.0 / (2 * 2.0))
    dynamic = write_results(tmp_path / "d.h5", [1, 2], [1.0, 1.0], [3.0, 2.0], [1, 1], ranks=3)
    assert plots.efficiency(plots.load(dynamic)) == pytest.approx(3.0 / (2 * 2.0))   # rank 0 hands out
    assert file_report(dynamic)["efficiency"] == pytest.approx(plots.efficiency(plots.load(dynamic)))
    assert file_report(dynamic)["busy_fraction"]["min"] == pytest.approx(0.5)


def test_report_piped_into_a_reader_that_left_ends_quietly(tmp_path):
    """`mtcmpi report f.h5 | head`: a closed pipe is no internal error (`true` reads nothing)."""
    path = grid_run(tmp_path / "g.h5", 4, 20)
    command = f"set -o pipefail; {shlex.quote(sys.executable)} -m mtcmpi report {shlex.quote(path)} | true"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0 and proc.stderr == ""


def test_load_names_a_file_that_is_no_results_file(tmp_path):
    with pytest.raises(UsageError, match="missing.h5: no such results file"):
        plots.load(str(tmp_path / "missing.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(UsageError, match="other.h5: not an mtcmpi results file"):
        plots.load(str(tmp_path / "other.h5"))
    with h5py.File(tmp_path / "odd.h5", "w") as f:
        f["tasks"] = np.zeros(3, [("rank", "i4"), ("start", "f8")])
    with pytest.raises(UsageError, match="odd.h5: not an mtcmpi results file .its /tasks has no end, status"):
        plots.load(str(tmp_path / "odd.h5"))


@pytest.mark.parametrize("command", ["report", "plot", "reduce"])
@pytest.mark.parametrize("content", [b"not hdf5", None])
def test_every_reader_of_a_results_file_says_in_one_line_that_it_is_none(tmp_path, command, content):
    path = tmp_path / "bad.h5"
    if content is None:
        h5py.File(path, "w").close()   # HDF5, but not mtcmpi's
    else:
        path.write_bytes(content)
    proc = run(None, ["-m", "mtcmpi", command, str(path)], 60)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"mtcmpi: error: {path}: ")
    assert ("not an HDF5 file" if content else "not an mtcmpi results file (it has no /tasks)") in line


def test_small_run_plots(tmp_path):
    path = grid_run(tmp_path / "r.h5", ranks=4, per_rank=10, failed=[3, 17], not_run=[39])
    plots.gantt(path, str(tmp_path / "g.png"))
    plots.utilization(path, str(tmp_path / "u.png"))
    width, height = png_size(tmp_path / "g.png")
    assert width == 1200 and 300 <= height <= 450
    assert png_size(tmp_path / "u.png") == (1200, 400)


def test_128_ranks_render_taller(tmp_path):
    path = grid_run(tmp_path / "r.h5", ranks=128, per_rank=10, failed=range(0, 1280, 97), not_run=[5])
    plots.plot_main(path, str(tmp_path / "g.png"), str(tmp_path / "u.png"))
    width, height = png_size(tmp_path / "g.png")
    assert width == 1200 and 800 <= height <= 1000
    assert (tmp_path / "u.png").stat().st_size > 10_000


def test_a_run_where_nothing_ran_still_plots(tmp_path):
    path = write_results(tmp_path / "r.h5", [-1, -1], [np.nan] * 2, [np.nan] * 2, [0, 0], ranks=4)
    plots.plot_main(path, str(tmp_path / "g.png"), str(tmp_path / "u.png"))
    assert png_size(tmp_path / "g.png")[0] == png_size(tmp_path / "u.png")[0] == 1200


def test_plot_main_defaults_to_both_next_to_the_file(tmp_path, capsys):
    path = grid_run(tmp_path / "run.h5", ranks=2, per_rank=2)
    plots.plot_main(path)
    assert (tmp_path / "run-gantt.png").stat().st_size > 0
    assert (tmp_path / "run-utilization.png").stat().st_size > 0
    assert "wrote" in capsys.readouterr().out


def test_missing_matplotlib_is_a_usage_error(tmp_path, monkeypatch):
    path = grid_run(tmp_path / "r.h5", ranks=2, per_rank=2)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for call in (lambda: plots.gantt(path, str(tmp_path / "g.png")),
                 lambda: plots.utilization(path, str(tmp_path / "u.png")),
                 lambda: plots.plot_main(path)):
        with pytest.raises(UsageError, match=r"pip install 'mtcmpi\[plot\]'"):
            call()
    assert not list(tmp_path.glob("*.png"))
