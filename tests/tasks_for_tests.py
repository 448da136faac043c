"""Task functions the tests run through the engine (importable as tests.tasks_for_tests:NAME)."""
import os
import time

import numpy as np


def square(x):
    return x * x


def add(a, b=0):
    return a + b


def maybe_fail(x):
    if x % 5 == 3:
        raise ValueError(f"x={x} is unlucky")
    return x


def where(x):
    """Which process ran task x."""
    return os.getpid()


def vector(x):
    return np.full(3, x, dtype=np.float64)


def exits(x):
    raise SystemExit(4)


def nap(seconds):
    time.sleep(seconds)
    return seconds


def fail(x):
    raise ValueError(f"x={x} is unlucky")


NOT_CALLABLE = 42


def fails_on_rank_1(x):
    from mpi4py import MPI
    if MPI.COMM_WORLD.rank == 1:
        raise RuntimeError("rank 1 is broken")
    time.sleep(0.02)   # the healthy ranks stay busy, so rank 1's failures find one of them asking
    return MPI.COMM_WORLD.rank


def breaks_the_protocol(x):
    """Sends rank 0 a message on mtcmpi's request tag that does not fit its buffer: an error
    inside mtcmpi's master, which must end the whole job at once."""
    from mpi4py import MPI
    # small enough to go eagerly: a large message's truncation can crash Open MPI instead
    MPI.COMM_WORLD.Send([bytearray(256), MPI.BYTE], 0, 1)
    return x


def add_steps(x, steps):
    return x + steps


def nap_steps(steps, pad):
    """Sleep 20 ms a step: a task whose cost column is its run time."""
    time.sleep(steps * 0.02)
    return steps
