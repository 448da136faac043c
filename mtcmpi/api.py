"""The Python API: run a function over an iterable of arguments on every rank of a job."""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from mpi4py import MPI

from .job import run_job
from .options import RunOptions
from .tasks import ItemsSource
from .world import World


class TasksFailed(RuntimeError):
    """Raised on every rank when tasks failed or the run stopped early; rank 0's carries the
    results and the failures."""

    def __init__(self, message: str, results: list | None, failures: dict | None):
        super().__init__(message)
        self.results, self.failures = results, failures


def run(fn: Callable, items: Iterable, *, star: bool = False, comm: MPI.Comm | None = None,
        **options: Any) -> list[Any] | None:
    """Call fn on every item across the ranks of comm (collective: every rank calls run).

    `options` are those of `mtcmpi run`, by their field names in RunOptions (schedule, chunk,
    prefetch, out, retries, timeout, cost, walltime, max_failures, ...), with the same defaults
    and checks; a bad one raises UsageError on every rank. Returns the results in item order on
    rank 0 and None elsewhere; with `out`, each as the file stores it (a dict of numpy arrays,
    {"value": ...} for a plain value), read back from the file, earlier runs' tasks included.
    With star=True an item is unpacked: fn(*item), or fn(**item) for dicts. If any task failed,
    or the run stopped early, every rank raises TasksFailed; rank 0's says why.
    """
    world = World.of(comm)
    outcome = run_job(world, fn, ItemsSource(items, star=star), RunOptions.of(options))
    stored = options.get("out")   # then the values are in the file, not in the ranks' memory
    results = world.comm.gather({} if stored else outcome.log.results, root=0)
    failures = world.comm.gather(outcome.log.failures, root=0)
    if world.rank != 0:
        if outcome.exit_code:
            raise TasksFailed("tasks failed or the run stopped early (see rank 0)", None, None)
        return None
    ordered: list[Any] = [None] * outcome.n
    if stored and os.path.exists(stored):
        from .output.hdf5 import load_results

        ordered = load_results(stored)
    for part in results:
        for tid, value in part.items():
            ordered[tid] = value
    if outcome.exit_code:
        merged = {tid: f for part in failures for tid, f in part.items()}
        summary = outcome.summary
        if merged:
            why = f"{len(merged)} of {outcome.n} tasks failed; first: {merged[min(merged)].traceback}"
        elif summary.total.stopped:
            why = (f"stopped early ({summary.total.stopped}): "
                   f"{outcome.n - summary.total.ran - summary.earlier} of {outcome.n} tasks not run")
        else:
            why = (f"{summary.earlier_failed} tasks failed in an earlier run of {summary.out} "
                   "(retry_failed=True runs them again)")
        raise TasksFailed(why, ordered, merged)
    return ordered
