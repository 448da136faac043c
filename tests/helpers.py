"""Helpers for tests that start `mpiexec ... python -m mtcmpi` as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def mtcmpi(args: list[str], ranks: int | None = 2, cwd: str | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `mpiexec -n ranks python -m mtcmpi ARGS` (or without mpiexec if ranks is None)."""
    env = dict(os.environ, **MPI_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, cwd, env.get("PYTHONPATH")) if p)
    for var in [v for v in env if v.startswith(("OMPI_COMM_WORLD", "PMIX_", "OMPI_MCA_ess", "OMPI_MCA_orte"))]:
        del env[var]   # never inherit an enclosing mpiexec's identity
    launcher = ["mpiexec", "-n", str(ranks)] if ranks else []
    return subprocess.run([*launcher, sys.executable, "-m", "mtcmpi", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd or ROOT, env=env, start_new_session=True)
