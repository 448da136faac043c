"""Rendered job scripts submitted for real: Slurm (sbatch), Grid Engine (qsub) and PBS through
Slurm's Torque compatibility qsub (slurm-wlm-torque), each on this machine.

scripts/batch-test starts the schedulers (scripts/slurm-up, scripts/sge-up), sets
MTCMPI_BATCH_TESTS=1 and runs this file; without that variable every test here is skipped.
Each scenario checks the job's exit status as the scheduler recorded it, the job log, the HDF5
file (every task ok, tried once) and a line per task execution that the tasks themselves append
(so a task run twice shows up). The walltime scenario has a one-minute walltime: the run is
stopped by the warning, the script submits itself again, and the chain of jobs ends with every
task done exactly once. The pool scenarios submit `mtcmpi jobscript ... -- serve` to Slurm: a
client in this process (mtcmpi.connect(), outside the job) runs tasks on it, and the job ends
with the session; with a two-minute walltime the warning drains the first pool, which exits 75
and resubmits itself, and the next pool joins and finishes the work, every task once.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import h5py
import pytest

import mtcmpi
from kernels.sleep import work
from mtcmpi import jobscript
from tests.helpers import ROOT

pytestmark = [pytest.mark.skipif(os.environ.get("MTCMPI_BATCH_TESTS") != "1",
                                 reason="submits to real schedulers: run scripts/batch-test"),
              pytest.mark.timeout(600)]

RANKS = 4
NAME = "mtcbatch"
PBS_BIN = os.environ.get("MTCMPI_PBS_BIN", "/var/lib/mtcmpi-slurm/pbs/bin")
TASK = "sleep {s} && echo 'task {{}}' >> 'runs log.txt'"   # quotes and a space: quoting is tested too
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"} if os.getuid() == 0 else {}


def sh(args: list[str], env: dict | None = None, cwd: Path | None = None, check: bool = True,
       timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


class Slurm:
    """sbatch, and the job's state and exit code from scontrol (finished jobs stay 10 min)."""

    name = "slurm"
    done_states = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                   "PREEMPTED", "BOOT_FAIL", "DEADLINE"}

    def env(self) -> dict:
        return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_COMM"))} | ROOT_ENV

    def check(self) -> None:
        cpus = sh(["sinfo", "-h", "-o", "%c"], check=False).stdout.split()
        if not cpus or int(cpus[0]) < RANKS:
            pytest.fail(f"Slurm is not up with {RANKS} CPUs (sinfo: {cpus}): run scripts/batch-test, "
                        f"or MTCMPI_SLURM_CPUS={RANKS} scripts/slurm-up")

    def submit(self, script: Path) -> str:
        return sh(["sbatch", "--parsable", script.name], self.env(), script.parent).stdout.strip().split(";")[0]

    def wait(self, job: str, timeout: float) -> int:
        end = time.time() + timeout
        while time.time() < end:
            code = self.exit_code(job)
            if code is not None:
                return code
            time.sleep(1)
        raise AssertionError(f"{self.name} job {job} still not done after {timeout:.0f} s")

    def exit_code(self, job: str) -> int | None:
        """The job's exit status once it has ended, else None."""
        fields = dict(f.split("=", 1) for f in sh(["scontrol", "-o", "show", "job", job]).stdout.split()
                      if "=" in f)
        return int(fields["ExitCode"].split(":")[0]) if fields["JobState"] in self.done_states else None

    def cancel(self, job: str) -> None:
        sh(["scancel", job], check=False)


class Pbs(Slurm):
    """A PBS script submitted with Slurm's PBS qsub: a Slurm job underneath."""

    name = "pbs"

    def env(self) -> dict:
        return super().env() | {"PATH": f"{PBS_BIN}:{os.environ['PATH']}"}

    def check(self) -> None:
        super().check()
        if not os.access(os.path.join(PBS_BIN, "qsub"), os.X_OK):
            pytest.fail(f"no PBS qsub in {PBS_BIN}: scripts/slurm-up unpacks slurm-wlm-torque there")

    def submit(self, script: Path) -> str:
        return sh(["qsub", script.name], self.env(), script.parent).stdout.split()[-1]


class Sge:
    """qsub, qstat while the job exists, then its exit status from qacct."""

    name = "sge"

    def env(self) -> dict:
        return {k: v for k, v in os.environ.items() if not k.startswith("OMPI_COMM")} | ROOT_ENV

    def check(self) -> None:
        slots = re.search(r"^slots\s+(\d+)", sh(["qconf", "-sq", "all.q"], check=False).stdout, re.M)
        if not slots or int(slots.group(1)) < RANKS:
            pytest.fail(f"Grid Engine is not up with {RANKS} slots in all.q: run scripts/batch-test, "
                        f"or MTCMPI_SGE_SLOTS={RANKS} scripts/sge-up")

    def submit(self, script: Path) -> str:
        return sh(["qsub", "-terse", script.name], self.env(), script.parent).stdout.strip()

    def wait(self, job: str, timeout: float) -> int:
        end = time.time() + timeout
        while time.time() < end:
            if sh(["qstat", "-j", job], check=False).returncode:      # gone from the queue
                acct = sh(["qacct", "-j", job], check=False).stdout
                status = re.search(r"^exit_status\s+(\d+)", acct, re.M)
                if status:
                    return int(status.group(1))
            time.sleep(1)
        raise AssertionError(f"sge job {job} still not done (or not in qacct) after {timeout:.0f} s")

    def cancel(self, job: str) -> None:
        sh(["qdel", job], check=False)


SCHEDULERS = {"slurm": Slurm(), "sge": Sge(), "pbs": Pbs()}


@pytest.fixture(params=list(SCHEDULERS))
def batch(request, tmp_path):
    """(scheduler, its work directory, the job ids seen); leftovers are cleaned up afterwards."""
    scheduler = SCHEDULERS[request.param]
    scheduler.check()
    tmp_path.chmod(0o755)
    jobs: list[str] = []
    yield scheduler, tmp_path, jobs
    for job in jobs:
        scheduler.cancel(job)
    kill_leftovers(tmp_path)


def kill_leftovers(workdir: Path) -> None:
    """SIGKILL processes still working in workdir (Grid Engine does not kill the ranks of a root
    job that it kills: they are in their own process groups)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")) == workdir and int(pid) != os.getpid():
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def job_script(scheduler, workdir: Path, tasks: int, seconds: float, walltime: str, **kw) -> Path:
    (workdir / "ids.txt").write_text("".join(f"{i}\n" for i in range(tasks)))
    script = workdir / f"job.{scheduler.name}"
    script.write_text(jobscript.render(
        scheduler.name, RANKS, walltime, ["--command", TASK.format(s=seconds), "--args", "ids.txt",
                                          "--out", "res.h5", "--flush-interval", "0.5"],
        name=NAME, script=str(script), **kw))
    return script


def follow(scheduler, workdir: Path, first: str, jobs: list[str], timeout: float) -> list[tuple[str, int, str]]:
    """Wait for a job and the ones it resubmitted: (id, exit status, log) each, in order."""
    chain, job = [], first
    while job:
        jobs.append(job)
        assert len(jobs) <= 6, f"more than 5 resubmissions: {jobs}"
        code = scheduler.wait(job, timeout)
        log = (workdir / f"{NAME}.{job}.log").read_text()
        chain.append((job, code, log))
        resubmitted = re.search(r"resubmitted as job (\S+) ", log)
        job = resubmitted.group(1) if resubmitted else None
    return chain


def check_every_task_once(workdir: Path, tasks: int) -> None:
    runs = Counter((workdir / "runs log.txt").read_text().splitlines())
    assert runs == Counter(f"task {i}" for i in range(tasks)), \
        f"ran twice: {[t for t, n in runs.items() if n > 1]}; missing: {tasks - len(runs)}"
    with h5py.File(workdir / "res.h5", "r") as f:
        assert f.attrs["n_tasks"] == tasks and f.attrs["ranks"] == RANKS
        log = f["tasks"][:]
        assert (log["status"] == 1).all() and (log["attempts"] == 1).all()
    assert not (workdir / "res.h5.journal").exists()


def test_job_runs_every_task(batch):
    scheduler, workdir, jobs = batch
    script = job_script(scheduler, workdir, tasks=12, seconds=1, walltime="00:05:00")
    t0 = time.time()
    chain = follow(scheduler, workdir, scheduler.submit(script), jobs, timeout=240)
    [(job, code, log)] = chain
    assert code == 0, log
    assert f"{scheduler.name} job {job} on" in log and f": {RANKS} ranks," in log
    assert "finished: every task of res.h5 has run, 0 failed (mpirun exit 0); exit 0" in log
    check_every_task_once(workdir, 12)
    print(f"{scheduler.name}: one job, {time.time() - t0:.0f} s")


def test_walltime_warning_stops_resubmits_and_finishes(batch):
    """Slurm and SGE send SIGUSR1 before the walltime (--signal, s_rt); under PBS mtcmpi's own
    --walltime stops it. Either way job 1 stops with 75, resubmits, and the chain finishes."""
    scheduler, workdir, jobs = batch
    tasks = 90   # 60 s of work for 3 workers: more than one 60-s job can do
    script = job_script(scheduler, workdir, tasks=tasks, seconds=2, walltime="00:01:00", warning=20)
    t0 = time.time()
    chain = follow(scheduler, workdir, scheduler.submit(script), jobs, timeout=180)
    codes = [code for _, code, _ in chain]
    logs = "\n".join(log for _, _, log in chain)
    assert len(chain) >= 2 and codes == [75] * (len(chain) - 1) + [0], logs
    for n, (_, _, log) in enumerate(chain[:-1], 1):
        assert f"(resubmission {n} of at most 10); it resumes res.h5" in log
    if scheduler.name == "pbs":
        assert "stopped early: walltime" in chain[0][2], logs
    else:
        assert "got SIGUSR1 (the walltime is near)" in chain[0][2], logs
        assert "stopped early: signal SIGUSR1" in logs
    assert "finished: every task of res.h5 has run, 0 failed" in chain[-1][2]
    check_every_task_once(workdir, tasks)
    print(f"{scheduler.name}: {len(chain)} jobs, exit statuses {codes}, {time.time() - t0:.0f} s")


@pytest.fixture
def slurm_pool(tmp_path):
    """(a session in this process with a record, submit(walltime, **kw) -> job id, job ids):
    the session, the jobs and their processes are all ended afterwards."""
    scheduler = SCHEDULERS["slurm"]
    scheduler.check()
    tmp_path.chmod(0o755)
    ex = mtcmpi.connect(str(tmp_path / "pool.json"), out=str(tmp_path / "session.h5"))
    jobs: list[str] = []

    def submit(walltime: str, **kw) -> str:
        script = tmp_path / "pool.slurm"
        script.write_text(jobscript.render("slurm", RANKS, walltime, ["serve", "--connection", "pool.json"],
                                           name=NAME, script=str(script), **kw))
        env = scheduler.env() | {"PYTHONPATH": ROOT}   # the job imports this mtcmpi and kernels
        jobs.append(sh(["sbatch", "--parsable", script.name], env, tmp_path).stdout.strip().split(";")[0])
        return jobs[-1]
    try:
        yield ex, submit, jobs
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        for job in jobs:
            scheduler.cancel(job)
        kill_leftovers(tmp_path)


def session_record(workdir: Path):
    with h5py.File(workdir / "session.h5", "r") as f:
        return f["tasks"][:]


def test_pool_job_serves_a_client_outside_it(slurm_pool, tmp_path):
    ex, submit, jobs = slurm_pool
    job = submit("00:05:00")
    t0 = time.time()
    assert [r["pid"] > 0 for r in ex.map(work, [0.2] * 30)] == [True] * 30
    ex.shutdown()   # the session ends: the pool leaves, the job ends
    code = SCHEDULERS["slurm"].wait(job, 60)
    log = (tmp_path / f"{NAME}.{job}.log").read_text()
    assert code == 0, log
    assert f"slurm job {job} on" in log and f": {RANKS} ranks," in log
    assert f"pool 0: {RANKS - 1} workers joined the session" in log
    assert "finished: the pool's session ended (mpirun exit 0); exit 0" in log
    tasks = session_record(tmp_path)
    assert len(tasks) == 30 and (tasks["status"] == 1).all() and (tasks["pool"] == 0).all()
    assert set(tasks["rank"]) == set(range(RANKS - 1))
    print(f"slurm pool: 30 tasks, one job, {time.time() - t0:.0f} s")


def test_pool_job_leaves_at_the_warning_and_its_resubmission_joins(slurm_pool, tmp_path):
    """Walltime 2 min, warning 20 s: Slurm's SIGUSR1 comes 20-80 s before the end; the pool
    drains and exits 75, the script resubmits it, the new pool joins and does the rest."""
    ex, submit, jobs = slurm_pool
    scheduler = SCHEDULERS["slurm"]
    first = submit("00:02:00", warning=20)
    t0 = time.time()
    futures: list = []
    while (code := scheduler.exit_code(first)) is None:   # keep the pool busy until it leaves
        assert time.time() - t0 < 180, "the first pool job did not end within 180 s"
        futures += [ex.submit(work, 0.5) for _ in range(30 - sum(not f.done() for f in futures))]
        time.sleep(0.5)
    log = (tmp_path / f"{NAME}.{first}.log").read_text()
    assert code == 75, log
    assert "got SIGUSR1 (the walltime is near)" in log and "got SIGUSR1; left the session cleanly" in log
    assert "stopped early (mpirun exit 75, after the warning), its session goes on" in log, log
    second = re.search(r"resubmitted as job (\S+) \(resubmission 1 of at most 10\); its pool joins "
                       r"the session again", log).group(1)
    jobs.append(second)
    futures += [ex.submit(work, 0.5) for _ in range(30)]   # the next pool does these and the rest
    for future in futures:
        future.result(timeout=120)
    ex.shutdown()
    assert scheduler.wait(second, 60) == 0, (tmp_path / f"{NAME}.{second}.log").read_text()
    tasks = session_record(tmp_path)
    assert (tasks["status"] == 1).all() and (tasks["attempts"] == 1).all()   # none ran twice
    assert set(tasks["pool"]) == {0, 1}
    print(f"slurm pools: {len(futures)} tasks, jobs {first} (exit 75) and {second} (exit 0), "
          f"{time.time() - t0:.0f} s")
