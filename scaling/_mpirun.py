"""How the benchmarks start MPI jobs: the venv's interpreter under mpiexec, with a timeout.

Open MPI as root needs two variables, and this 2-core machine needs oversubscription (which
also makes blocked ranks yield the CPU). The interpreter is sys.executable, never a pyenv shim
that costs 30 ms per process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


IDENTITY = ("OMPI_COMM_WORLD", "OMPI_MCA_ess", "OMPI_MCA_orte", "PMIX_")


def environment(extra: dict | None = None) -> dict:
    """The environment for an MPI job: MPI_ENV, the project on PYTHONPATH, a launch timestamp,
    and none of an MPI process's own identity. A process that initialised MPI (a test suite
    that ran the engine in-process is a singleton) sets those in its C environment, where
    os.environ does not see them but its children inherit them; a child mpiexec started from
    such a child exited 1 without a word."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(IDENTITY)}
    env.update(MPI_ENV, **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env["MTCMPI_LAUNCH_TIME"] = repr(time.time())
    return env


def mpirun(ranks: int, args: list[str], timeout: float = 300, env: dict | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    """Run `mpiexec -n ranks python ARGS`; raise with its output if it fails or times out."""
    cmd = ["mpiexec", "-n", str(ranks), sys.executable, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=environment(env), start_new_session=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json(text: str) -> dict:
    """The last line of a child's output that is a JSON object."""
    return next(json.loads(line) for line in reversed(text.splitlines()) if line.startswith("{"))
