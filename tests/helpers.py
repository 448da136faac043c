"""Helpers for tests that start `mpiexec ... python -m mtcmpi` as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scaling"))
from _mpirun import (MPI_ENV, command, end_job, env_option, environment, job_processes,  # noqa: E402,F401
                     launcher, ranks_of, run, signal_job, start)   # one way to start MPI jobs,
# shared with the benchmarks


def mtcmpi(args: list[str], ranks: int | None = 2, cwd: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `mpiexec -n ranks python -m mtcmpi ARGS` (or without mpiexec if ranks is None), with
    cwd also on PYTHONPATH; past the timeout the whole job is killed."""
    path = os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH")) if p)
    return run(ranks, ["-m", "mtcmpi", *args], timeout, env={"PYTHONPATH": path}, cwd=cwd)
