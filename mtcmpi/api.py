"""The Python API: run a function over an iterable of arguments on every rank of a job."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from mpi4py import MPI

from .job import run_job
from .tasks import ItemsSource
from .policies import parse_schedule
from .world import World


class TasksFailed(RuntimeError):
    """Raised on every rank when tasks failed; rank 0's carries the results and the failures."""

    def __init__(self, message: str, results: list | None, failures: dict | None):
        super().__init__(message)
        self.results, self.failures = results, failures


def run(fn: Callable, items: Iterable, *, schedule: str = "dynamic", chunk: int | None = None,
        prefetch: int = 1, star: bool = False, comm: MPI.Comm | None = None) -> list[Any] | None:
    """Call fn on every item across the ranks of comm (collective: every rank calls run).

    Returns the results in item order on rank 0 and None elsewhere. With star=True an item is
    unpacked: fn(*item), or fn(**item) for dicts. If any task raises, every rank raises
    TasksFailed; rank 0's names the first failure and its remote traceback.
    """
    world = World.of(comm)
    source = ItemsSource(items, star=star)
    outcome = run_job(world, fn, source, parse_schedule(schedule, chunk, prefetch))
    results = world.comm.gather(outcome.log.results, root=0)
    failures = world.comm.gather(outcome.log.failures, root=0)
    if world.rank != 0:
        if outcome.exit_code:
            raise TasksFailed("tasks failed (see rank 0)", None, None)
        return None
    ordered: list[Any] = [None] * outcome.n
    for part in results:
        for tid, value in part.items():
            ordered[tid] = value
    if outcome.exit_code:
        merged = {tid: f for part in failures for tid, f in part.items()}
        first = merged[min(merged)]
        raise TasksFailed(f"{len(merged)} of {outcome.n} tasks failed; first: {first.traceback}",
                          ordered, merged)
    return ordered
