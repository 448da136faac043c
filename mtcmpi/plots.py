"""Pictures of a run from its results file: a Gantt chart (every task on its rank) and busy ranks
over time with the efficiency.

Why: the summary's efficiency says *that* ranks idled; these say when and where (a slow start-up,
a straggler at the end, a rank that died, failures clustered on one host). Only the fields rank,
start, end and status of the /tasks log are read. Bars are drawn as one PolyCollection per status,
and bars of one rank less than a pixel apart are merged first, so a million-task run draws in
about a second and a dense row keeps its true colour instead of fading under anti-aliasing seams.
matplotlib is an optional extra (mtcmpi[plot]), imported on use; figures are drawn on the Agg
canvas directly, so a caller's pyplot state and backend are left alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import h5py
import numpy as np

from .errors import UsageError
from .output.members import members_of, read_groups
from .policies import Kind
from .report import efficiency as task_efficiency, open_results
from .tasklog import CRASHED, FAILED, OK, SKIPPED, TIMEOUT

STYLES = {OK: ("ok", "tab:blue"), FAILED: ("failed", "tab:red"),
          TIMEOUT: ("timeout", "tab:orange"), CRASHED: ("crashed", "black")}
STAGE_COLOURS = ("tab:blue", "tab:green", "tab:purple", "tab:cyan", "tab:olive", "tab:brown",
                 "tab:pink", "tab:gray")   # no red or orange: those are failed and timeout
WIDTH, DPI = 12.0, 100           # inches, dots per inch
MIN_BAR_PX = 1.0                 # a task is never drawn thinner than this
UTILIZATION_BINS = 1000          # the busy curve is averaged over this many bins (about a pixel)
EDGED_BAR_PX = 4.0               # median bar at least this wide: draw each task, with an outline


@dataclass
class Run:
    """The columns a plot needs, for the tasks that ran; times in seconds since `t0`."""

    name: str
    ranks: int
    policy: str
    n_tasks: int
    t0: float
    rank: np.ndarray
    start: np.ndarray
    end: np.ndarray
    status: np.ndarray
    stage: np.ndarray | None = None    # a pipeline record: each task's stage, an index into stages
    stages: tuple = ()
    rows: np.ndarray | None = None     # ranks each bar spans (a parallel task's contiguous members)

    def __post_init__(self) -> None:
        if self.rows is None:
            self.rows = np.ones(len(self.rank), np.int64)


def load(path: str) -> Run:
    """Read a results file; t0 is the earlier of the run's start_time and its first task start."""
    with open_results(path) as f:
        tasks = f["tasks"]   # a table (one field per column) or a group of column datasets
        fields = tasks.dtype.names if isinstance(tasks, h5py.Dataset) else tasks
        if missing := [c for c in ("rank", "start", "end", "status") if c not in fields]:
            raise UsageError(f"{path}: not an mtcmpi results file (its /tasks has no {', '.join(missing)})")
        rank, start, end, status = (tasks[c][()] for c in ("rank", "start", "end", "status"))
        stage = tasks["stage"][()] if "stage" in fields else None
        attrs = dict(f.attrs)
        groups = read_groups(f)
    ran = (rank >= 0) & np.isfinite(start) & np.isfinite(end)
    rows = np.ones(len(rank), np.int64)
    extra = []   # a parallel task's members beyond its first run of contiguous ranks: more bars
    for tid, (members, _) in groups.items():
        if ran[tid]:
            spans = contiguous(members_of(members))
            rank[tid], rows[tid] = spans[0]
            extra += [(tid, r, k) for r, k in spans[1:]]
    bars = np.r_[np.flatnonzero(ran), [t for t, _, _ in extra]].astype(np.int64)
    rank = np.r_[rank[ran], [r for _, r, _ in extra]].astype(rank.dtype)
    rows = np.r_[rows[ran], [k for _, _, k in extra]].astype(np.int64)
    start, end, status = start[bars], end[bars], status[bars]
    stage = None if stage is None else stage[bars]
    t0 = float(np.fmin(attrs.get("start_time", np.nan), start.min(initial=np.inf)))   # fmin skips NaN
    t0 = t0 if np.isfinite(t0) else 0.0
    ranks = max(int(attrs.get("ranks", 0)), int(rank.max()) + 1 if len(rank) else 1)
    policy = attrs.get("policy", "?")
    return Run(os.path.basename(path), ranks, policy if isinstance(policy, str) else policy.decode(),
               int(attrs.get("n_tasks", len(ran))), t0, rank, start - t0, end - t0, status,
               stage, tuple(str(n) for n in attrs.get("stages", ())), rows)


def contiguous(ranks: list[int]) -> list[tuple[int, int]]:
    """(first rank, count) of each run of consecutive ranks, in order: the rows a bar spans."""
    spans: list[tuple[int, int]] = []
    for r in ranks:
        if spans and r == spans[-1][0] + spans[-1][1]:
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        else:
            spans.append((r, 1))
    return spans


def busy_curve(starts: np.ndarray, ends: np.ndarray,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Busy ranks over time: counts[i] ranks run tasks in [times[i], times[i+1]) (a post step);
    a bar counts its rows (1, or a parallel task's ranks).

    Sorted +1/-1 events and a cumulative sum; at a time where several events meet only the
    count after all of them is kept. Tasks with a NaN start or end are ignored.
    """
    ran = np.isfinite(starts) & np.isfinite(ends)
    times = np.concatenate([starts[ran], ends[ran]])
    weight = np.ones(ran.sum(), np.int64) if rows is None else np.asarray(rows, np.int64)[ran]
    steps = np.concatenate([weight, -weight])
    order = np.argsort(times, kind="stable")
    times, counts = times[order], np.cumsum(steps[order])
    last = np.ones(len(times), bool)
    last[:-1] = times[1:] != times[:-1]
    return times[last], counts[last]


def binned(times: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The mean of the busy_curve step function over each bin [edges[j], edges[j+1]).

    Its integral is piecewise linear between events, so interpolating it at the edges is exact:
    area (task time) is kept, and gaps far shorter than a bin no longer show as a comb of dips.
    """
    if len(times) == 0:
        return np.zeros(len(edges) - 1)
    area = np.concatenate([[0.0], np.cumsum(counts[:-1] * np.diff(times))])
    return np.diff(np.interp(edges, times, area)) / np.diff(edges)


def efficiency(run: Run) -> float:
    """report.efficiency of the run, as the summary and `mtcmpi report` show it."""
    return task_efficiency(rank_time(run), Kind.of(run.policy).working_ranks(run.ranks), wall(run))


def rank_time(run: Run) -> float:
    """Seconds of rank time in tasks: a bar counts once per rank it spans."""
    return float(((run.end - run.start) * run.rows).sum())


def wall(run: Run) -> float:
    """First task start to last task end."""
    return float(run.end.max() - run.start.min()) if len(run.start) else 0.0


def merge_bars(rank: np.ndarray, start: np.ndarray, end: np.ndarray, gap: float,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Bars of one rank (and span) that are at most `gap` seconds apart joined into one
    (gap=-inf: none); returns rank, start, end and rows."""
    rows = np.ones(len(rank), np.int64) if rows is None else rows
    if len(rank) == 0:
        return rank, start, end, rows
    order = np.lexsort((start, rows, rank))
    rank, start, end, rows = rank[order], start[order], end[order], rows[order]
    new = np.ones(len(rank), bool)
    new[1:] = (rank[1:] != rank[:-1]) | (rows[1:] != rows[:-1]) | (start[1:] - end[:-1] > gap)
    first = np.flatnonzero(new)
    return rank[first], start[first], np.maximum.reduceat(end, first), rows[first]


def bar_vertices(rank: np.ndarray, start: np.ndarray, end: np.ndarray, height: float,
                 rows: np.ndarray | None = None) -> np.ndarray:
    """(n, 4, 2) rectangles, each over its rows from its rank down, for a PolyCollection."""
    v = np.empty((len(rank), 4, 2))
    v[:, :2, 0], v[:, 2:, 0] = start[:, None], end[:, None]
    span = 0 if rows is None else np.asarray(rows) - 1
    low, high = rank - height / 2, rank + span + height / 2
    v[:, 0, 1], v[:, 1, 1], v[:, 2, 1], v[:, 3, 1] = low, high, high, low
    return v


def time_unit(span: float) -> tuple[float, str]:
    """(divisor, axis label) so a run of hours is not labelled in tens of thousands of seconds."""
    if span > 3 * 3600:
        return 3600.0, "hours since run start"
    if span > 3 * 60:
        return 60.0, "minutes since run start"
    if span < 1:
        return 1e-3, "milliseconds since run start"
    return 1.0, "seconds since run start"


def seconds(value: float) -> str:
    """1,481 s, 18.9 s or 0.00574 s: three significant digits at least, no exponent."""
    return f"{value:,.0f} s" if value >= 100 else f"{value:.3g} s"


def matplotlib_parts():
    """(Figure, FigureCanvasAgg, Patch, PolyCollection, MaxNLocator), or a UsageError."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import PolyCollection
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise UsageError("plotting needs matplotlib: pip install 'mtcmpi[plot]'") from None
    return Figure, FigureCanvasAgg, Patch, PolyCollection, MaxNLocator


def add_bars(ax, run: Run, pixel: float, height: float, Patch, PolyCollection) -> list:
    """One PolyCollection per status drawn on `ax`; returns the legend handles, counts included."""
    handles = []
    groups = [(run.status == code, label, colour) for code, (label, colour) in STYLES.items()]
    if run.stage is not None:   # a pipeline: ok tasks coloured by stage
        groups[:1] = [((run.status == OK) & (run.stage == i), name, STAGE_COLOURS[i % len(STAGE_COLOURS)])
                      for i, name in enumerate(run.stages)]
    for mine, label, colour in groups:   # ok first: failures are drawn over it
        if not mine.any():
            continue
        edged = np.median(run.end[mine] - run.start[mine]) >= EDGED_BAR_PX * pixel
        r, s, e, k = merge_bars(run.rank[mine], run.start[mine], run.end[mine],
                                -np.inf if edged else pixel, run.rows[mine])
        e = np.maximum(e, s + MIN_BAR_PX * pixel)
        ax.add_collection(PolyCollection(bar_vertices(r, s, e, height, k), facecolors=colour,
                                         edgecolors="white" if edged else "none", linewidths=0.5))
        handles.append(Patch(color=colour, label=f"{label} ({mine.sum():,})"))
    not_drawn = (("skipped", int((run.status == SKIPPED).sum())), ("not run", run.n_tasks - len(run.rank)))
    return handles + [Patch(color="none", label=f"{label} ({n:,}, not drawn)") for label, n in not_drawn if n]


def draw_gantt(run: Run, png: str, title: str | None = None) -> None:
    """The Gantt chart of `run` as a PNG; see gantt()."""
    Figure, Canvas, Patch, PolyCollection, MaxNLocator = matplotlib_parts()
    height_in = float(np.clip(2.0 + 0.06 * run.ranks, 3.5, 10.0))
    fig = Figure(figsize=(WIDTH, height_in), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    span = max(float(run.end.max()) if len(run.end) else 0.0, 1e-9)
    scale, xlabel = time_unit(span)
    bar_height = 0.8 if 0.8 * height_in * DPI / run.ranks >= 4 else 1.0   # no gaps under 4 px a row
    scaled = replace(run, start=run.start / scale, end=run.end / scale)
    handles = add_bars(ax, scaled, span / scale / (0.85 * WIDTH * DPI), bar_height, Patch, PolyCollection)
    ax.set_xlim(0, span * 1.01 / scale)
    ax.set_ylim(run.ranks - 0.5, -0.5)                          # rank 0 on top
    ax.yaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True, steps=[1, 2, 4, 5, 8, 10]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rank")
    ax.set_title(title or f"{run.name}: {run.n_tasks:,} tasks on {run.ranks} ranks, policy {run.policy}")
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    Canvas(fig).print_png(png)


def draw_utilization(run: Run, png: str) -> None:
    """Busy ranks over time of `run` as a PNG; see utilization()."""
    Figure, Canvas, _, _, MaxNLocator = matplotlib_parts()
    fig = Figure(figsize=(WIDTH, 4.0), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    times, counts = busy_curve(run.start, run.end, run.rows)
    span = max(float(times[-1]) if len(times) else 0.0, 1e-9)
    scale, xlabel = time_unit(span)
    edges = np.linspace(0.0, span, UTILIZATION_BINS + 1)
    busy = binned(times, counts, edges)
    ax.stairs(busy, edges / scale, fill=True, color="tab:blue", alpha=0.3)
    ax.stairs(busy, edges / scale, color="tab:blue", linewidth=1, label="busy ranks")
    workers = Kind.of(run.policy).working_ranks(run.ranks)
    ax.axhline(workers, color="black", linestyle="--", linewidth=1, label=f"working ranks ({workers})")
    if workers != run.ranks:
        ax.axhline(run.ranks, color="grey", linestyle=":", linewidth=1,
                   label=f"all ranks ({run.ranks}; rank 0 hands out work)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 4, 5, 8, 10]))
    ax.set_xlim(0, span * 1.01 / scale)
    ax.set_ylim(0, run.ranks * 1.12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("busy ranks")
    work = rank_time(run)
    ax.set_title(f"{run.name}: busy ranks over time, efficiency {efficiency(run):.1%} "
                 f"(task time {seconds(work)} / ({workers} working ranks x {seconds(wall(run))}))")
    fig.legend(loc="outside lower center", ncols=3, frameon=False)
    Canvas(fig).print_png(png)


def gantt(path: str, png: str, title: str | None = None) -> None:
    """Write a Gantt chart of the results file `path` to `png`: one row per rank (rank 0 on top),
    one bar per task from start to end, coloured by status; skipped and not-run tasks are only
    counted in the legend. Bars narrower than a pixel are merged with their neighbours on the
    same rank and every bar is at least one pixel wide, so short failed tasks stay visible."""
    draw_gantt(load(path), png, title)


def utilization(path: str, png: str) -> None:
    """Write busy ranks over time of the results file `path` to `png` (averaged over bins of about
    a pixel), against the working ranks, with the efficiency in the title:
    total task time / (working ranks x (last end - first start))."""
    draw_utilization(load(path), png)


def plot_main(path: str, gantt_png: str | None = None, utilization_png: str | None = None) -> None:
    """`mtcmpi plot`: the requested plots, reading the file once; with neither, both, written
    next to the results file as <stem>-gantt.png and <stem>-utilization.png."""
    matplotlib_parts()                      # the missing-extra message before reading anything
    if gantt_png is None and utilization_png is None:
        stem = os.path.splitext(path)[0]
        gantt_png, utilization_png = f"{stem}-gantt.png", f"{stem}-utilization.png"
    run = load(path)
    for png, draw in ((gantt_png, draw_gantt), (utilization_png, draw_utilization)):
        if png is not None:
            draw(run, png)
            print(f"mtcmpi: wrote {png}", flush=True)
