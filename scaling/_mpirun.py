"""How the benchmarks and the tests start MPI jobs: `mpiexec -n N python ...` in a session of its
own, with a clean MPI environment and a timeout that kills the whole job.

Open MPI as root needs two variables, and this 2-core machine needs oversubscription (which also
makes blocked ranks yield the CPU); MPICH's launcher (Hydra) runs as root and oversubscribes as
it is, and ignores them. The launcher is the first `mpiexec` on PATH (a venv made by
`scripts/setup --mpi mpich` brings MPICH's), the interpreter sys.executable, never a pyenv shim
that costs 30 ms per process.

Ending a job: Open MPI gives each rank a process group of its own inside mpiexec's session;
MPICH's Hydra gives hydra_pmi_proxy and every rank a session of their own (setsid), and its
ranks outlive a kill of mpiexec's session. So every process started here carries JOB_TAG, the
pid of the mpiexec (or python) it was started as, in its environment, and job_processes finds a
job's processes by that tag, by descent from that pid, and by its session, wherever the
launcher put them and whether or not their parents are still alive.
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
JOB_TAG = "MTCMPI_TEST_JOB"   # in every process of a job: the pid the job was started as


def environment(extra: dict | None = None) -> dict:
    """The environment for an MPI job: MPI_ENV, the project on PYTHONPATH, a launch timestamp,
    and none of an MPI process's own identity. A process that initialised MPI (a test suite
    that ran the engine in-process is a singleton) sets those in its C environment, where
    os.environ does not see them but its children inherit them; a child mpiexec started from
    such a child exited 1 without a word."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(IDENTITY) and k != JOB_TAG}
    env.update(MPI_ENV, **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env["MTCMPI_LAUNCH_TIME"] = repr(time.time())
    return env


def command(ranks: int | None, args: list[str]) -> list[str]:
    """`mpiexec -n ranks python ARGS`, or `python ARGS` alone for ranks None, through a shell
    that puts its own pid in JOB_TAG and then becomes that command (same pid)."""
    job = [*(["mpiexec", "-n", str(ranks)] if ranks else []), sys.executable, *args]
    return ["/bin/sh", "-c", f'{JOB_TAG}=$$; export {JOB_TAG}; exec "$@"', "sh", *job]


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
    """Start command(ranks, args) in a new session (end_job ends all of it), text mode."""
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
            end_job(proc.pid)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command name) of every live process, from /proc."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, rest = f.read().rsplit(")", 1)
            state, ppid, _, sid = rest.split()[:4]
        except (OSError, ValueError):
            continue
        if state not in "ZX":   # a zombie is dead already: nothing to signal
            found[int(entry)] = (int(ppid), int(sid), head.split("(", 1)[1])
    return found


def _environ(pid: int) -> list[bytes]:
    """The environment a process was started with ([] if it is gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def job_processes(pid: int) -> dict[int, str]:
    """pid -> command name of every live process of the job started as `pid` by command() or
    start(): the process itself, its session, those with its JOB_TAG and their descendants."""
    processes, tag = _processes(), f"{JOB_TAG}={pid}".encode()
    members = {p for p, (_, sid, _) in processes.items()
               if p == pid or sid == pid or tag in _environ(p)}
    grown = True
    while grown:   # descendants: also a child whose environment was not passed on
        grown = False
        for child, (ppid, _, _) in processes.items():
            if ppid in members and child not in members:
                members.add(child)
                grown = True
    return {p: processes[p][2] for p in members}


def signal_job(pid: int, sig: int) -> None:
    """Send sig to every process of the job started as pid (mpiexec, the launcher's daemons,
    the ranks, their children), as a batch system does."""
    for member in job_processes(pid):
        try:
            os.kill(member, sig)
        except OSError:
            pass


def end_job(pid: int, seconds: float = 10.0) -> None:
    """SIGKILL every process of the job started as pid until none is left (or `seconds`
    passed): no rank outlives the test or benchmark that ends it, wherever the launcher put it."""
    deadline = time.monotonic() + seconds
    while job_processes(pid) and time.monotonic() < deadline:
        signal_job(pid, signal.SIGKILL)
        time.sleep(0.02)


RANK_VARIABLES = (b"OMPI_COMM_WORLD_RANK=", b"PMI_RANK=")   # what Open MPI, MPICH tell a rank


def is_rank(pid: int) -> bool:
    """Whether this process has a rank from the launcher: a rank, or a process a rank started."""
    return any(v.startswith(RANK_VARIABLES) for v in _environ(pid))


def ranks_of(pid: int) -> list[int]:
    """The pids of the ranks of the job started as pid (not mpiexec, not the launcher's
    daemons, not the processes a rank started)."""
    processes = _processes()
    return sorted(p for p in job_processes(pid)
                  if is_rank(p) and not is_rank(processes.get(p, (0,))[0]))


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
