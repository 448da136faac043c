"""`mtcmpi jobscript`: rendering for Slurm, SGE and PBS, bad input, quoting, and the rendered
script's own logic (run, walltime warning, resubmit or not) run by bash with a stand-in mpirun
and sbatch. The real schedulers are in test_batch_real.py (scripts/batch-test)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mtcmpi import jobscript
from mtcmpi.errors import UsageError
from tests.helpers import MPI_ENV, ROOT, mtcmpi, wait_journalled

pytestmark = pytest.mark.timeout(120)

RUN = ["kernels.noop:none", "--count", "4", "--out", "res.h5"]
ODD = ["--command", "echo \"it's\" $HOME `id` {} ; echo a\\b > 'x y.txt'", "--args", "lines.txt",
       "--out", "my results.h5", "--output-dir", "logs dir"]


def render(scheduler: str = "slurm", run: list[str] = RUN, **kw) -> str:
    kw.setdefault("cores", 4)
    kw.setdefault("walltime", "00:10:00")
    return jobscript.render(scheduler, kw.pop("cores"), kw.pop("walltime"), run, **kw)


def directives(text: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in text.splitlines() if line.startswith(prefix)]


def test_slurm_directives_and_defaults():
    text = render("slurm", walltime="1:30:00", warning=120, queue="short", name="scan")
    assert directives(text, "#SBATCH") == [
        "--job-name=scan", "--ntasks=4", "--time=01:30:00", "--partition=short",
        "--signal=B:USR1@120", "--output=%x.%j.log", "--open-mode=append", "--requeue"]
    assert "--grace 60" in text                       # half the warning, added to the run
    assert "--walltime" not in text                   # on Slurm mtcmpi reads the end itself
    assert text.startswith("#!/bin/bash\n") and jobscript.MARKER in text


def test_sge_directives():
    text = render("sge", walltime="2:00:00", warning=300, pe="orte")
    assert directives(text, "#$") == [
        "-N mtcmpi", "-pe orte 4", "-l h_rt=02:00:00,s_rt=01:55:00", "-cwd", "-V", "-j y",
        "-o $JOB_NAME.$JOB_ID.log", "-S /bin/bash", "-r y"]
    assert "-notify" not in text.replace("No -notify", "")


def test_pbs_directives_nodes_and_walltime_stop():
    text = render("pbs", cores=8, ppn=4, walltime="24:00:00", queue="long", warning=600)
    assert directives(text, "#PBS") == ["-N mtcmpi", "-l nodes=2:ppn=4", "-l walltime=24:00:00",
                                        "-q long", "-j oe", "-V", "-r y"]
    # PBS sends no warning: mtcmpi stops by itself, the warning before the walltime
    assert "--grace 300 --walltime 23:50:00)" in text
    assert "nodes=1:ppn=4" in render("pbs", cores=4)


def test_no_queue_is_a_comment_never_an_empty_directive():
    for scheduler, prefix in (("slurm", "#SBATCH"), ("sge", "#$"), ("pbs", "#PBS")):
        text = render(scheduler)
        assert "(no --queue: the site's default queue)" in text
        assert not any(d.endswith("=") or d in ("-q", "--partition") for d in directives(text, prefix))


def test_given_grace_and_walltime_are_kept():
    text = render("pbs", run=[*RUN, "--grace=7", "--walltime", "1:00:00"], warning=60)
    assert "--grace=7 --walltime 1:00:00)" in text and "--grace 30" not in text


@pytest.mark.parametrize("kw, message", [
    (dict(walltime="ten"), "is not HH:MM:SS"),
    (dict(walltime="0"), "positive whole number"),
    (dict(walltime="00:01:00", warning=60), "shorter than the walltime"),
    (dict(cores=0), "--cores must be >= 1"),
    (dict(scheduler="lsf"), "--scheduler 'lsf'"),
    (dict(name="1st"), "--name '1st'"),
    (dict(scheduler="pbs", name="a_very_long_job_name"), "PBS: at most 15"),
    (dict(queue="q; rm -rf /"), "--queue"),
    (dict(scheduler="pbs", cores=6, ppn=4), "--ppn 4 must divide --cores 6"),
    (dict(ppn=2), "--ppn is for PBS"),
    (dict(scheduler="pbs", pe="mpi"), "--pe is for SGE"),
    (dict(run=["kernels.noop:task", "--count", "4"]), "need --out"),
    (dict(run=[]), "give the arguments of mtcmpi run after --"),
    (dict(run=[*RUN, "--bogus"]), "unrecognized arguments: --bogus"),
    (dict(run=[*RUN, "--grace", "90"], warning=60), "--grace 90 must be shorter than --warning 60"),
    (dict(venv="/nonexistent"), "--venv /nonexistent: no bin/python"),
    (dict(mpirun=""), "--mpirun is empty"),
    (dict(max_resubmit=-1), "--max-resubmit"),
])
def test_bad_input_names_the_value(kw, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        render(kw.pop("scheduler", "slurm"), run=kw.pop("run", RUN), **kw)


def test_a_placeholder_without_a_value_is_an_error(tmp_path, monkeypatch):
    for part in ("slurm", "common"):
        (tmp_path / f"{part}.sh").write_text(jobscript.read(part))
    (tmp_path / "slurm.sh").write_text("#!/bin/bash\n#SBATCH --account=${account}\n")
    monkeypatch.setattr(jobscript, "TEMPLATES", tmp_path)
    with pytest.raises(KeyError, match="account"):
        render("slurm")


@pytest.mark.parametrize("scheduler", jobscript.SCHEDULERS)
def test_rendered_scripts_are_valid_bash(scheduler, tmp_path):
    path = tmp_path / "job.sh"
    path.write_text(render(scheduler, run=ODD, modules=["openmpi/4.1", "hdf5"]))
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


# ---- the rendered script run by bash, with a stand-in mpirun and sbatch ----

FAKE_MPIRUN = """#!/bin/bash
# records its arguments (NUL-separated), drops its own options and runs mtcmpi on one rank
printf '%s\\0' "$@" >"$FAKE_DIR/mpirun.args"
while [ $# -gt 0 ] && [[ "$1" != */bin/python ]]; do shift; done
exec "$@"
"""
FAKE_SUBMIT = """#!/bin/bash
printf '%s\\n' "$@" >"$FAKE_DIR/submit.args"
echo 4242
"""


@pytest.fixture
def job(tmp_path):
    """Render a Slurm script into tmp_path and run it as Slurm would (returns a runner)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("mpirun", FAKE_MPIRUN), ("sbatch", FAKE_SUBMIT), ("qsub", FAKE_SUBMIT),
                       ("squeue", "#!/bin/sh\nexit 1\n")):   # no Slurm here: no job end time
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "SLURM_", "PBS_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", FAKE_DIR=str(tmp_path), SLURM_JOB_ID="17",
               SLURM_NTASKS="4", PYTHONPATH=ROOT, **MPI_ENV)

    def start(run: list[str], scheduler: str = "slurm", extra_env: dict | None = None,
              **kw) -> subprocess.Popen:
        script = tmp_path / "job.sh"
        script.write_text(render(scheduler, run=run, mpirun=str(bin_dir / "mpirun"), **kw))
        return subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=dict(env, **(extra_env or {})),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return start


def finish(proc: subprocess.Popen, timeout: float = 90) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_finished_run_exits_0_and_quotes_every_argument(job, tmp_path):
    (tmp_path / "lines.txt").write_text("a b\nc'd\n")
    proc = job(ODD)
    log = finish(proc)
    assert proc.returncode == 0, log
    args = (tmp_path / "mpirun.args").read_text().split("\0")[:-1]
    assert args[:2] == ["-n", "4"] and args[2].endswith("/bin/python")
    assert args[3:] == ["-m", "mtcmpi", "run", *ODD, "--grace", "60"]
    assert "slurm job 17" in log and "finished: every task of my results.h5 has run, 0 failed" in log
    assert not (tmp_path / "submit.args").exists()
    assert sorted(os.listdir(tmp_path / "logs dir")) == ["0.err", "0.out", "1.err", "1.out"]
    assert (tmp_path / "logs dir" / "1.out").read_text().startswith("it's /")   # $HOME expanded by the task's shell


def test_failed_tasks_exit_1_without_resubmitting(job, tmp_path):
    proc = job(["tests.tasks_for_tests:maybe_fail", "--count", "10", "--out", "res.h5"])
    log = finish(proc)
    assert proc.returncode == 1, log
    assert "every task of res.h5 has run, 2 failed" in log and "resubmit" not in log


def test_bad_input_is_not_resubmitted(job, tmp_path):
    proc = job(["no_such_module:f", "--count", "4", "--out", "res.h5"])
    log = finish(proc)
    assert proc.returncode == 2, log
    assert "mpirun exit 2, not stopped by the walltime warning: not resubmitting" in log
    assert not (tmp_path / "submit.args").exists()


def warn_when_running(proc: subprocess.Popen, tmp_path: Path, group: bool = False) -> None:
    """SIGUSR1 to the job shell (as Slurm sends it) or its process group (as Grid Engine does),
    once mtcmpi has journalled a task."""
    wait_journalled(str(tmp_path / "res.h5"))
    (os.killpg if group else os.kill)(proc.pid, signal.SIGUSR1)


@pytest.mark.parametrize("group", [False, True], ids=["shell", "process-group"])
def test_warning_stops_the_run_and_resubmits_the_script(job, tmp_path, group):
    proc = job(["kernels.sleep:work", "--params", "sleeps.csv", "--out", "res.h5",
                "--flush-interval", "0.2"], warning=10)
    (tmp_path / "sleeps.csv").write_text("x\n" + "0.5\n" * 40)
    warn_when_running(proc, tmp_path, group)
    log = finish(proc)
    assert proc.returncode == 75, log
    assert "got SIGUSR1" in log and "stopped early: signal SIGUSR1" in log
    assert re.search(r"stopped early \(mpirun exit 75, after the warning\), \d+ tasks left", log)
    assert "resubmitted as job 4242 (resubmission 1 of at most 10)" in log
    assert (tmp_path / "submit.args").read_text().split("\n")[:-1] == [
        "--parsable", "--export=ALL,MTCMPI_RESUBMIT=1", str(tmp_path / "job.sh")]


def test_resubmission_cap(job, tmp_path):
    proc = job(["kernels.sleep:work", "--params", "sleeps.csv", "--out", "res.h5",
                "--flush-interval", "0.2"], warning=10, extra_env={"MTCMPI_RESUBMIT": "3"},
               max_resubmit=3)
    (tmp_path / "sleeps.csv").write_text("x\n" + "0.5\n" * 40)
    warn_when_running(proc, tmp_path)
    log = finish(proc)
    assert proc.returncode == 75, log
    assert "not resubmitting: done 3 times already (MTCMPI_MAX_RESUBMIT=3)" in log
    assert not (tmp_path / "submit.args").exists()


def test_pbs_script_uses_the_nodefile_and_writes_its_log(job, tmp_path):
    (tmp_path / "nodes").write_text("n1\nn1\nn2\n")
    proc = job(RUN, scheduler="pbs", extra_env={"PBS_JOBID": "99.server", "PBS_O_WORKDIR": str(tmp_path),
                                                 "PBS_NODEFILE": str(tmp_path / "nodes")})
    out = finish(proc)
    assert proc.returncode == 0, out
    assert out == f"log: {tmp_path}/mtcmpi.99.server.log\n"
    log = (tmp_path / "mtcmpi.99.server.log").read_text()
    assert "pbs job 99.server" in log and "finished: every task of res.h5 has run" in log
    args = (tmp_path / "mpirun.args").read_text().split("\0")[:-1]
    assert args[:4] == ["-n", "3", "-machinefile", str(tmp_path / "nodes")]
    assert args[-4:] == ["--grace", "60", "--walltime", "00:08:00"]


# ---- a pool for a session: -- serve ... ----

SERVE = ["serve", "--connection", "pool.json"]


def test_serve_needs_no_out_and_gets_the_grace():
    text = render("slurm", run=SERVE, warning=120)
    assert "subcommand=serve" in text and "args=(--connection pool.json --grace 60)" in text
    assert "--walltime" not in text                   # Slurm: serve reads the end itself
    assert "args=(--connection pool.json --grace 300 --walltime 23:50:00)" in render(
        "pbs", run=SERVE, walltime="24:00:00", warning=600)   # PBS sends no warning
    assert render(run=["run", *RUN]) == render(run=RUN)          # `run` may be said too


@pytest.mark.parametrize("run, message", [
    (["serve"], "serve arguments after --: the following arguments are required: --connection"),
    (["serve", "--wait", "5"], "serve arguments after --: the following arguments are required: --connection"),
    ([*SERVE, "--out", "x.h5"], "serve arguments after --: unrecognized arguments: --out x.h5"),
    ([*SERVE, "--grace", "-1"], "--grace and --wait must be >= 0"),
    ([*SERVE, "--walltime", "soon"], "is not HH:MM:SS"),
    ([*SERVE, "--grace", "90"], "--grace 90 must be shorter than --warning 60: the pool leaves"),
])
def test_bad_serve_arguments_are_refused_by_serves_parser(run, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        render(run=run, warning=60)


@pytest.fixture
def session(tmp_path):
    """A session in this process that the job's pool joins (tmp_path/pool.json)."""
    import mtcmpi

    ex = mtcmpi.connect(str(tmp_path / "pool.json"), ip="127.0.0.1")
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def test_a_pool_job_ends_with_its_session(job, tmp_path, session):
    proc = job(SERVE)
    assert [session.submit(pow, i, 2).result(timeout=60) for i in range(3)] == [0, 1, 4]
    session.shutdown()
    log = finish(proc)
    assert proc.returncode == 0, log
    args = (tmp_path / "mpirun.args").read_text().split("\0")[:-1]
    assert args[3:] == ["-m", "mtcmpi", "serve", "--connection", "pool.json", "--grace", "60"]
    assert "finished: the pool's session ended (mpirun exit 0); exit 0" in log
    assert not (tmp_path / "submit.args").exists()


def test_the_warning_drains_a_pool_job_which_resubmits(job, tmp_path, session):
    proc = job(SERVE, warning=10)
    futures = [session.submit(time.sleep, 0.3) for _ in range(40)]
    futures[0].result(timeout=60)
    os.kill(proc.pid, signal.SIGUSR1)
    log = finish(proc)
    assert proc.returncode == 75, log
    assert "got SIGUSR1 (the walltime is near)" in log and "got SIGUSR1; left the session cleanly" in log
    assert "stopped early (mpirun exit 75, after the warning), its session goes on" in log
    assert "resubmitted as job 4242 (resubmission 1 of at most 10); its pool joins the session again" in log
    assert not all(f.done() for f in futures)   # the rest waits in the session for another pool


# ---- the command line ----

def test_cli_writes_an_executable_script(tmp_path):
    out = tmp_path / "scan.sbatch"
    proc = mtcmpi(["jobscript", "--scheduler", "slurm", "--cores", "8", "--walltime", "2:00:00",
                   "-o", str(out), "--", *RUN], ranks=None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {out}: submit it with `sbatch {out}`\n"
    assert os.access(out, os.X_OK) and "#SBATCH --ntasks=8" in out.read_text()
    assert f"script={out}" in out.read_text()          # the fallback when $0 is a spooled copy


def test_cli_prints_without_o_and_refuses_bad_input():
    shown = mtcmpi(["jobscript", "--scheduler", "sge", "--cores", "2", "--walltime", "1:00:00", "--",
                    *RUN], ranks=None)
    assert shown.returncode == 0 and shown.stdout.startswith("#!/bin/bash\n#$ -N mtcmpi\n")
    served = mtcmpi(["jobscript", "--scheduler", "slurm", "--cores", "128", "--walltime", "04:00:00",
                     "--", "serve", "--connection", "pool.json"], ranks=None)
    assert served.returncode == 0, served.stderr
    assert "-m mtcmpi \"$$subcommand\"".replace("$$", "$") in served.stdout
    assert "args=(--connection pool.json --grace 150)" in served.stdout
    bad = mtcmpi(["jobscript", "--scheduler", "sge", "--cores", "2", "--walltime", "1:00:00", "--",
                  "kernels.noop:task", "--count", "3"], ranks=None)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("mtcmpi: error: the run arguments need --out FILE.h5")
    helped = mtcmpi(["jobscript", "--help"], ranks=None)
    assert helped.returncode == 0
    for word in ("--scheduler", "--warning", "--max-resubmit", "examples:", "exit status"):
        assert word in helped.stdout
