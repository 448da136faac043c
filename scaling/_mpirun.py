"""How the benchmarks and the tests start MPI jobs: `mpiexec -n N python ...` in a session of its
own, with a clean MPI environment and a timeout that kills the whole job.

Open MPI as root needs two variables, and this 2-core machine needs oversubscription (which also
makes blocked ranks yield the CPU); MPICH's launcher (Hydra) runs as root and oversubscribes as
it is, and ignores them. The launcher is the first `mpiexec` on PATH (a venv made by
`scripts/setup --mpi mpich` brings MPICH's), the interpreter sys.executable, never a pyenv shim
that costs 30 ms per process.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}

# What a launcher tells its processes about their job: Open MPI (ORTE, PMIx) and MPICH (Hydra,
# PMI). User settings (OMPI_MCA_* tunables, MPIR_CVAR_*) are kept.
IDENTITY = ("OMPI_COMM_WORLD", "OMPI_MCA_ess", "OMPI_MCA_orte", "PMIX_",
            "PMI_", "HYDRA_", "HYDI_", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")


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


def command(ranks: int | None, args: list[str]) -> list[str]:
    """`mpiexec -n ranks python ARGS`, or `python ARGS` alone for ranks None."""
    return [*(["mpiexec", "-n", str(ranks)] if ranks else []), sys.executable, *args]


@functools.cache
def launcher() -> str:
    """'mpich' or 'openmpi': the family of the first mpiexec on PATH (their options differ)."""
    shown = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True, timeout=30).stdout
    return "mpich" if "HYDRA" in shown else "openmpi"


def env_option(name: str, value: str) -> list[str]:
    """mpiexec's option that sets one variable for the ranks of one app context."""
    return ["-env", name, value] if launcher() == "mpich" else ["-x", f"{name}={value}"]


def start(ranks: int | None, args: list[str], env: dict | None = None, cwd: str | None = None,
          **popen) -> subprocess.Popen:
    """Start command(ranks, args) in a new session (kill_session ends all of it), text mode."""
    return subprocess.Popen(command(ranks, args), env=environment(env), cwd=cwd or ROOT,
                            start_new_session=True, text=True, **popen)


def run(ranks: int | None, args: list[str], timeout: float, env: dict | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess:
    """start() and wait for the output; past the timeout every process of the job is killed
    and subprocess.TimeoutExpired raised."""
    with start(ranks, args, env, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def session_processes(sid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every process of a session, from /proc."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                name, rest = f.read().rsplit(")", 1)
            if int(rest.split()[3]) == sid:
                found.append((int(entry), name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def kill_session(sid: int, sig: int) -> None:
    """Signal every process of a session: Open MPI gives each rank its own process group, so
    killing mpiexec's group would leave the ranks running (as a batch system's kill would not)."""
    for pid, _ in session_processes(sid):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def ranks_of(sid: int) -> list[int]:
    """The pids of the ranks (python processes) of a job's session."""
    return [pid for pid, name in session_processes(sid) if "python" in name]


def mpirun(ranks: int, args: list[str], timeout: float = 300, env: dict | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    """Run `mpiexec -n ranks python ARGS`; raise with its output if it fails or times out."""
    proc = run(ranks, args, timeout, env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(proc.args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json(text: str) -> dict:
    """The last line of a child's output that is a JSON object."""
    return next(json.loads(line) for line in reversed(text.splitlines()) if line.startswith("{"))
