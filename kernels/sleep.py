"""The sleep task of Lunacek et al. (IEEE Cluster 2013): the weak-scaling benchmark's work unit.

work(x) sleeps x seconds and returns pid, start and end time, as in the paper. task(i) is the
same with the i-th duration of a seeded uniform(27, 33) draw scaled by time_scale, so
`mtcmpi run kernels.sleep:task --count N` needs no params file (0.01 gives 0.27-0.33 s).
"""
from __future__ import annotations

import os
import random
import time

LOW, HIGH = 27.0, 33.0


def work(x: float) -> dict:
    """Sleep x seconds; return {'pid', 'start_time', 'end_time'}."""
    start = time.time()
    time.sleep(x)
    return {"pid": os.getpid(), "start_time": start, "end_time": time.time()}


def duration(i: int, time_scale: float = 0.01, seed: int = 0) -> float:
    """Task i's duration: uniform(27, 33) x time_scale, reproducible from (seed, i) alone."""
    return random.Random(seed * 1_000_003 + i).uniform(LOW, HIGH) * time_scale


def durations(n: int, time_scale: float = 0.01, seed: int = 0) -> list[float]:
    """The durations of tasks 0..n-1."""
    return [duration(i, time_scale, seed) for i in range(n)]


def task(i: int, time_scale: float = 0.01, seed: int = 0) -> dict:
    """Sleep task i's duration (see duration) and return what work() returns."""
    return work(duration(i, time_scale, seed))
