"""Summaries of a run: each rank condenses its own log, rank 0 merges the condensed parts.

Only counts, one example per failure type and the few slowest tasks cross the network, so a
summary of millions of tasks on thousands of ranks costs one small gather.
"""
from __future__ import annotations

import heapq
import math
import os
from itertools import repeat
from typing import TYPE_CHECKING, Iterator

from .errors import EXIT_OK, EXIT_STOPPED, EXIT_TASKS_FAILED, UsageError
from .faults import StopKind
from .policies import Kind
from .tasklog import FAILED_STATES, OK, SKIPPED, TaskLog

if TYPE_CHECKING:
    import h5py

SLOWEST = 5


class Part:
    """One rank's condensed log. (A plain class, not a dataclass: see world.World.)"""

    def __init__(self, ran: int = 0, ok: int = 0, failed: int = 0, skipped: int = 0, busy: float = 0.0,
                 first: float = math.inf, last: float = -math.inf, stopped: str | None = None,
                 stop_kind: StopKind | None = None, retried: int = 0):
        self.ran, self.ok, self.failed, self.skipped, self.busy = ran, ok, failed, skipped, busy
        self.first = first       # the earliest task start (epoch seconds)
        self.last = last         # the latest task end
        self.stopped = stopped   # why the rank started no more tasks, if it stopped early
        self.stop_kind = stop_kind
        self.retried = retried   # tasks tried more than once (--retries), counted by their last rank
        self.failures: dict[str, list] = {}   # type -> [count, id, message, traceback]
        self.slowest: list[tuple[float, int, int]] = []   # (seconds, id, rank)


def durations(log: TaskLog) -> Iterator[float]:
    """Each task's run time, streamed (a list would cost 32 bytes a task)."""
    return (e - s for s, e in zip(log.starts, log.ends))


def group_time(log: TaskLog) -> float:
    """The time of a parallel task's other members (its root's log holds it once): k - 1 more
    ranks were busy for as long as it ran."""
    groups = log.groups
    if not groups:
        return 0.0
    return sum((len(groups[t][0]) - 1) * (e - s)
               for t, s, e in zip(log.ids, log.starts, log.ends) if t in groups)


def condense(log: TaskLog, stopped: str | None = None,
             retried: dict[int, tuple[int, int]] | None = None,
             stop_kind: StopKind | None = None) -> Part:
    """This rank's Part: O(tasks) locally, O(1) to send. With retries (retried not None) a task
    counts once, by its last try, on the rank that made it; busy time counts every try."""
    part = Part(stopped=stopped, stop_kind=stop_kind, busy=sum(durations(log)) + group_time(log),
                first=min(log.starts, default=math.inf), last=max(log.ends, default=-math.inf))
    status, ids = log.status, log.ids
    if retried is not None:
        pick, _ = log.finals(retried)
        status, ids = [log.status[i] for i in pick], [log.ids[i] for i in pick]
        part.retried = sum(1 for t, (rank, _) in retried.items() if rank == log.rank)
    part.ran = len(ids)
    part.failed = sum(status.count(s) for s in FAILED_STATES)   # timeouts and crashes too
    part.ok = status.count(OK)
    part.skipped = status.count(SKIPPED)
    failed = log.failures if retried is None else {t for t, s in zip(ids, status) if s in FAILED_STATES}
    for tid in sorted(failed):
        f = log.failures[tid]
        entry = part.failures.setdefault(f.type, [0, tid, f.message, f.traceback])
        entry[0] += 1
    part.slowest = heapq.nlargest(SLOWEST, zip(durations(log), log.ids, repeat(log.rank)))
    return part


def merge(parts: list[Part]) -> Part:
    """All ranks' Parts as one; failure examples keep the lowest task id."""
    total = Part()
    for p in parts:
        total.ran += p.ran
        total.ok += p.ok
        total.failed += p.failed
        total.skipped += p.skipped
        total.stopped, total.stop_kind = (total.stopped, total.stop_kind) if total.stopped else (p.stopped, p.stop_kind)
        total.first, total.last = min(total.first, p.first), max(total.last, p.last)
        total.retried += p.retried
        total.busy += p.busy
        for kind, (count, tid, msg, tb) in p.failures.items():
            entry = total.failures.setdefault(kind, [0, tid, msg, tb])
            if tid < entry[1]:
                entry[1:] = [tid, msg, tb]
            entry[0] += count
    total.slowest = heapq.nlargest(SLOWEST, (s for p in parts for s in p.slowest))
    return total


def efficiency(task_time: float, workers: int, wall: float) -> float:
    """Task time over (working ranks x wall time), the wall time running from the first task's
    start to the last task's end: 1.0 means no working rank ever idled. The one definition
    behind the run summary, `mtcmpi report` and the utilization plot."""
    return task_time / (workers * wall) if wall > 0 and workers else 0.0


class Summary:
    """What a run did, as printed at its end."""

    def __init__(self, tasks: int, ranks: int, workers: int, policy: str, startup: float,
                 engine: float, total: Part, earlier: int = 0, earlier_failed: int = 0,
                 store: float = 0.0, out: str | None = None,
                 startup_phases: dict[str, tuple[float, float]] | None = None):
        self.tasks, self.ranks, self.workers, self.policy, self.total = tasks, ranks, workers, policy, total
        self.startup = startup   # launch until every rank was ready
        self.engine = engine     # first task handed out until every rank was done (the store not included)
        self.earlier = earlier   # tasks done by an earlier run of the same --out, not run now
        self.earlier_failed = earlier_failed   # of those, failed ones (they count for the exit status)
        self.store = store       # seconds spent writing the results file, after the engine
        self.out = out           # the results file
        self.startup_phases = startup_phases or {}   # startup.summarise

    def exit_code(self) -> int:
        """EXIT_STOPPED if a signal or the walltime stopped the run before every task ran, else
        EXIT_TASKS_FAILED if any task failed (now or in an earlier run), else EXIT_OK."""
        left = self.tasks - self.total.ran - self.earlier
        if self.total.stop_kind and left and self.total.stop_kind.resumable:
            return EXIT_STOPPED
        return EXIT_TASKS_FAILED if self.total.failed or self.earlier_failed else EXIT_OK

    @property
    def wall(self) -> float:
        """First task start to last task end, as `mtcmpi report` reads it from the file."""
        return max(0.0, self.total.last - self.total.first)

    @property
    def efficiency(self) -> float:
        return efficiency(self.total.busy, self.workers, self.wall)

    def lines(self) -> list[str]:
        return self.outcome_lines() + ([f"  results: {self.out} (written in {self.store:.2f} s)"]
                                       if self.out else [])

    def outcome_lines(self) -> list[str]:
        t = self.total
        not_run = self.tasks - t.ran - self.earlier
        if not t.ran and self.earlier == self.tasks > 0:
            return [f"mtcmpi: nothing to run: all {self.tasks} tasks were done by an earlier run"
                    + (f" ({self.earlier_failed} failed; --retry-failed runs them again)"
                       if self.earlier_failed else "")]
        out = [f"mtcmpi: {self.tasks} tasks on {self.ranks} ranks ({self.policy}): "
               f"{t.ok} ok, {t.failed} failed" + (f", {t.skipped} skipped (already done)" if t.skipped else "")
               + (f", {not_run} not run" if not_run else ""),
               f"  start-up {self.startup:.2f} s (launch until all ranks ready), "
               f"engine {self.engine:.3f} s, {t.ran / self.engine if self.engine > 0 else 0:,.0f} tasks/s",
               f"  task time {t.busy:.2f} s on {self.workers} working ranks over {self.wall:.3f} s "
               f"(first start to last end): efficiency {self.efficiency:.3f}"]
        if t.retried:
            out.append(f"  retried: {t.retried} tasks failed and were tried again (--retries)")
        if t.stopped:
            out.append(f"  stopped early: {t.stopped}" + (f"; {not_run} tasks not run: run the same "
                                                          "command again to resume" if not_run else ""))
        if self.earlier:
            out.append(f"  resumed: {self.earlier} tasks were done by an earlier run"
                       + (f" ({self.earlier_failed} of them failed; --retry-failed runs them again)"
                          if self.earlier_failed else ""))
        for kind, (count, tid, msg, _) in sorted(t.failures.items(), key=lambda kv: -kv[1][0]):
            out.append(f"  failed: {kind} x{count} (first: task {tid}: {msg})")
        if t.failures:
            first = min(t.failures.values(), key=lambda e: e[1])
            out.append("  traceback of the first failure:")
            out.extend("    " + line for line in first[3].rstrip().splitlines())
        return out


def open_results(path: str, option: str = "") -> h5py.File:
    """An earlier run's results file, opened for reading (by report, plot, reduce, --costs-from);
    a UsageError naming it (after option, if given) if it is missing, not HDF5, or not mtcmpi's."""
    import h5py   # here: the engine imports this module, and a run reads no results file

    name = f"{option} {path}" if option else path
    if not os.path.exists(path):
        raise UsageError(f"{name}: no such results file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise UsageError(f"{name}: not an HDF5 file ({exc})") from None
    if "tasks" not in f:
        f.close()
        raise UsageError(f"{name}: not an mtcmpi results file (it has no /tasks)")
    return f


def file_report(path: str) -> dict:
    """The numbers `mtcmpi report` prints, computed from a results file's task log."""
    import numpy as np

    from .output.members import members_of, read_groups
    from .tasklog import STATUS_NAMES

    with open_results(path) as f:
        groups = read_groups(f)
        t = f["tasks"][:]
        status, rank, start, end = t["status"].astype(int), t["rank"], t["start"], t["end"]
        kinds, messages = f["errors/type"].asstr()[:], f["errors/message"].asstr()[:]
        ranks = int(f.attrs.get("ranks", max(rank.max(initial=0) + 1, 1)))
        policy = str(f.attrs.get("policy", ""))
        stages = list(f.attrs.get("stages", []))   # a pipeline record: a stage column too
    ran = ~np.isnan(start)
    seconds = np.where(ran, end - start, 0.0)
    wall = float(end[ran].max() - start[ran].min()) if ran.any() else 0.0
    busy = np.bincount(rank[ran], weights=seconds[ran], minlength=ranks)[:ranks]
    task_time = float(seconds.sum())
    for tid, (members, _) in groups.items():   # a parallel task keeps all its ranks busy
        others = members_of(members)[1:]
        busy[others] += seconds[tid]
        task_time += len(others) * seconds[tid]
    failures: dict[str, dict] = {}
    for tid in np.flatnonzero(kinds != ""):
        entry = failures.setdefault(kinds[tid], {"count": 0, "first_task": int(tid), "message": messages[tid]})
        entry["count"] += 1
    slow = np.argsort(-seconds)[:SLOWEST]
    workers = Kind.of(policy).working_ranks(ranks)
    fraction = (busy / wall if wall else busy)[ranks - workers:]   # the master is never busy
    return {"file": path, "tasks": len(status), "ranks": ranks, "working_ranks": workers, "policy": policy,
            "status": {name: int((status == code).sum()) for code, name in STATUS_NAMES.items()},
            "failures": failures, "wall_s": wall, "task_time_s": task_time,
            "efficiency": efficiency(task_time, workers, wall),
            "busy_fraction": {"min": float(fraction.min()) if len(fraction) else 0.0,
                              "median": float(np.median(fraction)) if len(fraction) else 0.0,
                              "max": float(fraction.max(initial=0))},
            "slowest": [{"task": int(i), "seconds": float(seconds[i]), "rank": int(rank[i])}
                        for i in slow if ran[i]],
            **({"stages": per_stage(stages, t["stage"], status, start, end, ran)} if stages else {})}


def per_stage(names: list, stage, status, start, end, ran) -> dict:
    """Per pipeline stage: tasks, how many ok, task time, and its span (first start to last end)."""
    out = {}
    for index, name in enumerate(names):
        mine, did = stage == index, (stage == index) & ran
        out[str(name)] = {"tasks": int(mine.sum()), "ok": int((mine & (status == 1)).sum()),
                          "task_time_s": float((end[did] - start[did]).sum()),
                          "span_s": float(end[did].max() - start[did].min()) if did.any() else 0.0}
    return out


def format_file_report(r: dict) -> list[str]:
    """`mtcmpi report` as text."""
    counts = ", ".join(f"{n} {name}" for name, n in r["status"].items() if n)
    b = r["busy_fraction"]
    out = [f"{r['file']}: {r['tasks']} tasks on {r['ranks']} ranks ({r['policy']}): {counts or 'none'}",
           f"  wall {r['wall_s']:.2f} s (first start to last end), task time {r['task_time_s']:.2f} s, "
           f"efficiency {r['efficiency']:.3f} (task time / ({r['working_ranks']} working ranks x wall))",
           f"  busy fraction per working rank: min {b['min']:.3f}, median {b['median']:.3f}, max {b['max']:.3f}"]
    for kind, e in sorted(r["failures"].items(), key=lambda kv: -kv[1]["count"]):
        out.append(f"  failed: {kind} x{e['count']} (first: task {e['first_task']}: {e['message']})")
    out.append("  slowest: " + ", ".join(f"task {s['task']} {s['seconds']:.3f} s (rank {s['rank']})"
                                         for s in r["slowest"]))
    out += [f"  stage {name}: {s['tasks']} tasks, {s['ok']} ok, task time {s['task_time_s']:.2f} s, "
            f"span {s['span_s']:.2f} s" for name, s in r.get("stages", {}).items()]
    return out
