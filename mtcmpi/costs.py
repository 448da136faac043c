"""Cost estimates of tasks, and the orders cost-aware policies derive from them (rank 0).

A cost is any number that grows with a task's run time: a column of the params file
(--cost COLUMN), a function of the task's arguments (--cost module:function, called the way
the task is), or the measured durations of an earlier run (--costs-from previous.h5: by task
id when it ran the same task list, else by arguments, i.e. the task's key). Dynamic policies
hand out the longest tasks first, so the last round of work ends evenly; static partitions
longest-first into the least-loaded rank (LPT).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import UsageError, exception_line
from .tasks import Source, invoker, resolve, plain_ids


@dataclass(frozen=True)
class CostSpec:
    """Where the costs come from: `given` (a column or module:function) or `previous` (a file)."""

    given: str | None = None
    previous: str | None = None

    def __post_init__(self) -> None:
        if self.given and self.previous:
            raise UsageError("give --cost or --costs-from, not both")

    def estimate(self, source: Source, n: int, fingerprint: str,
                 keys: np.ndarray | None) -> np.ndarray:
        """One cost per task id, checked: finite and >= 0."""
        if self.previous:
            costs = from_results(self.previous, n, fingerprint, keys)
        elif ":" in self.given:
            costs = from_function(source, self.given)
        else:
            costs = from_column(source, self.given)
        bad = np.flatnonzero(~(np.isfinite(costs) & (costs >= 0)))
        if len(bad):
            raise UsageError(f"--cost {self.given or self.previous}: the cost of "
                             f"{source.describe(int(bad[0]))} is {costs[bad[0]]!r}; costs must be "
                             "finite numbers >= 0")
        return costs


def from_column(source: Source, column: str) -> np.ndarray:
    """The values of one params-file column (or key of the API's dict items)."""
    costs = []
    for tid, row in source.tasks():
        if not isinstance(row, dict):
            raise UsageError(f"--cost {column}: a column name needs --params; give a function "
                             "as module:function instead")
        value = row.get(column)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"--cost {column}: {source.describe(tid)} has "
                             f"{'no column ' + repr(column) if value is None else repr(value)}, "
                             f"not a number (columns: {', '.join(row)})")
        costs.append(value)
    return np.array(costs, dtype=np.float64)


def from_function(source: Source, target: str) -> np.ndarray:
    """fn(arguments) for every task, called as the task function is."""
    call = invoker(resolve(target), source.call)
    costs = []
    for tid, payload in source.tasks():
        try:
            costs.append(float(call(payload)))
        except Exception as exc:
            raise UsageError(f"--cost {target} failed on {source.describe(tid)}: "
                             f"{exception_line(exc)}") from None
    return np.array(costs, dtype=np.float64)


def from_results(path: str, n: int, fingerprint: str, keys: np.ndarray | None) -> np.ndarray:
    """Measured durations (end - start) of an earlier results file. Tasks it did not run, or
    that match none of its tasks, get the mean duration of those that match."""
    from .report import open_results

    with open_results(path, "--costs-from") as f:
        table = f["tasks"][:]
        same = f.attrs.get("fingerprint") == fingerprint and len(table) == n
        earlier = f["task_keys"][:] if "task_keys" in f else None
    took = table["end"] - table["start"]
    if same:
        costs = took
    elif earlier is not None and keys is not None:
        ran = np.isfinite(took)
        by_key = dict(zip(earlier[ran].tolist(), took[ran].tolist()))
        costs = np.array([by_key.get(k, np.nan) for k in keys.tolist()], dtype=np.float64)
    else:
        raise UsageError(f"--costs-from {path}: it ran a different task list and tasks cannot be "
                         "matched by arguments (that needs --params .csv/.jsonl, --count or "
                         "command tasks in both runs, and --out in both)")
    known = np.isfinite(costs)
    if not known.any():
        raise UsageError(f"--costs-from {path}: none of its tasks ran or matches a task of this run")
    costs[~known] = costs[known].mean()
    return costs


def longest_first(ids: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """ids by falling cost; ties keep id order."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids[np.argsort(-costs[ids], kind="stable")]


def lpt(ids: np.ndarray, costs: np.ndarray, size: int) -> list[Sequence[int]]:
    """Longest processing time first: each task, longest first, goes to the least-loaded of
    `size` ranks. Each rank's ids come back ascending, so sources stream them, and as
    tasks.plain_ids, so the ranks they are scattered to load no numpy."""
    ids = np.asarray(ids, dtype=np.int64)
    loads = [(0.0, rank) for rank in range(size)]
    owner = np.empty(len(ids), dtype=np.int64)
    order = np.argsort(-costs[ids], kind="stable")
    for position, cost in zip(order.tolist(), costs[ids][order].tolist()):
        load, rank = heapq.heappop(loads)
        owner[position] = rank
        heapq.heappush(loads, (load + cost, rank))
    by_owner = np.argsort(owner, kind="stable")   # ids ascending within each rank
    return [plain_ids(share) for share in np.split(ids[by_owner], np.searchsorted(owner[by_owner], np.arange(1, size)))]

