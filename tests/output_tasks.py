"""Task functions of the results-file tests that run under mpiexec (importable as tests.output_tasks)."""
import numpy as np


def rows(i: int) -> np.ndarray:
    """8 KiB that do not compress: a row written straight into the results file."""
    return np.random.default_rng(i).random(1024)


def small_rows(i: int) -> np.ndarray:
    """384 bytes that do not compress: a row kept in the journal until the file is built."""
    return np.random.default_rng(i).random(48)


def slow_rows(i: int) -> np.ndarray:
    """rows(i) after 50 ms: a run that is still going when it is killed."""
    import time
    time.sleep(0.05)
    return rows(i)
