"""`mtcmpi pipeline`: the plan and its checks in-process, then end to end under mpiexec."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import pytest

from mtcmpi.pipeline.stages import load
from tests.helpers import environment, mtcmpi

pytestmark = pytest.mark.timeout(120)

PIPELINE = '''
import os
from mtcmpi.pipeline import split, transform, merge

def log(name):
    with open("ran.log", "a") as f:
        f.write(name + "\\n")

def upper(src, dst):
    log(dst)
    if "bad" in open(src).read() and not os.path.exists("fixed"):
        raise ValueError(f"cannot read {src}")
    with open(src) as f, open(dst, "w") as g:
        g.write(f.read().upper())

def cut(src, outs):
    log("cut")
    for i, out in enumerate(outs):
        with open(out, "w") as f:
            f.write(f"{open(src).read().strip()} part {i}\\n")

parts = split("cut", input="all.txt", output=[f"work/part{i}.txt" for i in range(2)], run=cut)
up = transform("upper", input=["in1.txt", "in2.txt", "in3.txt", parts], output="work/{/.}.up", run=upper)
counts = transform("count", input=up, output="{.}.wc", command="wc -c < {} > {out}; echo {out} >> ran.log")
total = merge("total", input=up, output="work/all.up", command="cat {in} > {out}; echo total >> ran.log")
'''


def project(tmp_path, text=PIPELINE, bad=False):
    for i in (1, 2, 3):
        (tmp_path / f"in{i}.txt").write_text("bad\n" if bad and i == 2 else f"line {i}\n")
    (tmp_path / "all.txt").write_text("all\n")
    (tmp_path / "pipe.py").write_text(text)
    return tmp_path


def ran(tmp_path, keep=False) -> list[str]:
    """What the tasks logged they ran since the last call (keep: also for the next call)."""
    path = tmp_path / "ran.log"
    lines = path.read_text().split() if path.exists() else []
    if not keep:
        path.unlink(missing_ok=True)
    return lines


def run(tmp_path, *args, ranks: int | None = 3):
    return mtcmpi(["pipeline", "pipe.py", "--out", "p.h5", *args], ranks=ranks, cwd=str(tmp_path), timeout=100)


def test_the_plan_links_tasks_to_the_makers_of_their_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(project(tmp_path))
    plan = load("pipe.py")
    assert plan.problems == []
    assert len(plan.tasks) == 1 + 5 + 5 + 1
    assert plan.tasks["upper:3"].inputs == ["work/part0.txt"] and plan.tasks["upper:3"].waits == ["cut:0"]
    assert plan.tasks["count:3"].waits == ["upper:3"] and len(plan.tasks["total:0"].waits) == 5
    assert plan.order.index("cut:0") < plan.order.index("upper:3") < plan.order.index("total:0")


BAD = '''
from mtcmpi.pipeline import transform
a = transform("a", input="work/b.out", output="work/a.out", command="cp {} {out}")
b = transform("b", input=a, output="work/b.out", command="cp {} {out}")
c = transform("c", input="in1.txt", output="work/a.out", command="cp {} {out}")
d = transform("d", input="nothere.txt", output="x", command="cp {} {out}")
e = transform("e", input="in1.txt", output="y", run="nosuchmodule:f")
e = transform("e", input="in1.txt", output="z", command="true")
'''


def test_every_problem_of_a_bad_graph_is_named_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(project(tmp_path, BAD))
    problems = "; ".join(load("pipe.py").problems)
    for part in ("cycle: a -> b", "stages a and c both write work/a.out", "input nothere.txt is made "
                 "by no stage", "'nosuchmodule:f'", "stage 'e' is declared 2 times"):
        assert part in problems


@pytest.mark.timeout(60)
def test_a_bad_graph_is_one_line_and_exit_2_on_every_rank(tmp_path):
    proc = run(project(tmp_path, BAD), ranks=2)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mtcmpi: error:")]
    assert len(lines) == 1 and "cycle" in lines[0] and "both write" in lines[0]
    assert not (tmp_path / "work").exists() and not (tmp_path / "p.h5").exists()


def test_runs_then_skips_what_is_up_to_date_and_redoes_what_an_edit_feeds(tmp_path):
    project(tmp_path)
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "12 ok" in proc.stdout and len(ran(tmp_path)) == 12
    assert (tmp_path / "work/all.up").read_text().splitlines()[0] == "LINE 1"
    with h5py.File(tmp_path / "p.h5") as f:
        stages = list(f.attrs["stages"])
        ids = list(f["task_ids"].asstr()[:])
        row = ids.index("count:3")
        assert stages[f["tasks"]["stage"][row]] == "count" and f["tasks"]["status"][row] == 1
        assert f["waited_for"].asstr()[row] == "upper:3" and f["tasks"]["rank"][row] in (1, 2)
    proc = run(tmp_path, "--dry-run", ranks=2)
    assert "12 up to date" in proc.stdout and ran(tmp_path) == []
    time.sleep(0.01)
    (tmp_path / "in2.txt").write_text("line two\n")
    proc = run(tmp_path, "--dry-run", ranks=2)
    assert "9 up to date, 3 would run" in proc.stdout
    assert run(tmp_path).returncode == 0
    assert sorted(ran(tmp_path)) == sorted(["work/in2.up", "work/in2.wc", "total"])
    report = mtcmpi(["report", "p.h5"], ranks=None, cwd=str(tmp_path)).stdout
    assert "stage upper: 5 tasks, 1 ok" in report
    plot = mtcmpi(["plot", "p.h5"], ranks=None, cwd=str(tmp_path))   # a Gantt chart coloured by stage
    assert plot.returncode == 0 and (tmp_path / "p-gantt.png").stat().st_size > 0, plot.stderr


def test_a_failed_task_blocks_its_dependents_until_retry_failed(tmp_path):
    project(tmp_path, bad=True)
    proc = run(tmp_path)
    assert proc.returncode == 1
    with h5py.File(tmp_path / "p.h5") as f:
        ids, messages = list(f["task_ids"].asstr()[:]), f["errors/message"].asstr()[:]
        assert "cannot read in2.txt" in messages[ids.index("upper:1")]
        assert messages[ids.index("count:1")] == "not run: input failed: upper:1"
        assert messages[ids.index("total:0")] == "not run: input failed: upper:1"
    ran(tmp_path)
    assert run(tmp_path).returncode == 1 and ran(tmp_path) == []     # not retried by default
    (tmp_path / "fixed").touch()
    assert run(tmp_path, "--retry-failed").returncode == 0
    assert sorted(ran(tmp_path)) == sorted(["work/in2.up", "work/in2.wc", "total"])


SLOW = '''
import time
from mtcmpi.pipeline import transform

def slow(src, dst):
    with open("ran.log", "a") as f:
        f.write(src + "\\n")
    time.sleep(0.3)
    with open(dst, "w") as f:
        f.write(src)

out = transform("slow", input=[f"x{i}.txt" for i in range(12)], output="{.}.out", run=slow)
'''


@pytest.mark.timeout(120)
def test_a_kill_at_any_moment_loses_and_redoes_nothing_finished(tmp_path):
    project(tmp_path, SLOW)
    for i in range(12):
        (tmp_path / f"x{i}.txt").write_text(str(i))
    cmd = ["mpiexec", "-n", "3", sys.executable, "-m", "mtcmpi", "pipeline", "pipe.py", "--out", "p.h5"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=environment({"PYTHONPATH": str(tmp_path)}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = tmp_path / "p.h5.journal"
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    finished = {json.loads(line)["task"] for line in journal.read_text().splitlines() if line.strip()}
    assert 3 <= len(finished) < 13
    first = ran(tmp_path)
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    again = ran(tmp_path)
    inputs = {f"x{t.split(':')[1]}.txt" for t in finished}
    assert not inputs & set(again)                       # nothing finished ran again
    assert set(first) | set(again) >= {f"x{i}.txt" for i in range(12)}
    assert all((tmp_path / f"x{i}.out").read_text() == f"x{i}.txt" for i in range(12))


@pytest.mark.timeout(120)
def test_the_littlewood_pipeline_equals_the_one_process_grid_cell_for_cell(tmp_path):
    import numpy as np

    from kernels.littlewood import orbit_hits
    from tests.helpers import ROOT

    env = environment({"LW_DEGREE": "10", "LW_SIZE": "60", "LW_TASKS": "3", "LW_DIR": str(tmp_path / "lw")})
    proc = subprocess.run(["mpiexec", "-n", "3", sys.executable, "-m", "mtcmpi", "pipeline",
                           os.path.join(ROOT, "examples", "lw_pipeline.py"), "--out", str(tmp_path / "lw.h5")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=100, start_new_session=True)
    assert proc.returncode == 0, proc.stderr
    assert "6 ok" in proc.stdout
    assert np.array_equal(np.load(tmp_path / "lw/grid.npy"), orbit_hits(0, 2 ** 10, 10, 60))
    assert (tmp_path / "lw/littlewood10.png").stat().st_size > 0


def test_a_dry_run_changes_nothing_even_with_restart(tmp_path):
    project(tmp_path)
    assert run(tmp_path, ranks=2).returncode == 0
    journal = (tmp_path / "p.h5.journal").read_text()
    proc = run(tmp_path, "--dry-run", "--restart", ranks=2)
    assert proc.returncode == 0 and "12 would run" in proc.stdout
    assert (tmp_path / "p.h5.journal").read_text() == journal


FAULTY = '''
import os, sys, time
from mtcmpi.pipeline import transform

def work(src, dst):
    name = os.path.basename(src)[:-3]
    with open("ran.log", "a") as f:
        f.write(name + "\\n")
    if name.startswith("stuck"):
        time.sleep(300)                    # past --timeout: killed with its child process
    if name.startswith("crash"):
        os._exit(3)                        # under --isolate: its child process dies, not the rank
    if name.startswith("flaky") and not os.path.exists(name + ".tried"):
        open(name + ".tried", "w").close()
        raise RuntimeError(f"first try of {name} fails")
    if name.startswith("bad"):
        time.sleep(0.2)
        raise ValueError(f"{name} is bad")
    time.sleep(0.2 if name.startswith("slow") else float(os.environ.get("STAGE_SLEEP", "0")))
    with open(dst, "w") as f:
        f.write(name)

out = transform("work", input=sorted(n for n in os.listdir(".") if n.endswith(".in")),
                output="work/{/.}.out", run=work)
'''


def faulty(tmp_path, names):
    """A one-stage pipeline over files called names (+ .in), whose names say how each behaves."""
    for name in names:
        (tmp_path / f"{name}.in").write_text(name)
    (tmp_path / "pipe.py").write_text(FAULTY)
    return tmp_path


def record(tmp_path) -> dict[str, tuple]:
    """task input name -> (status name, attempts, error message) from the record p.h5."""
    from mtcmpi.tasklog import STATUS_NAMES

    with h5py.File(tmp_path / "p.h5") as f:
        tasks, messages, ids = f["tasks"][:], f["errors/message"].asstr()[:], f["task_ids"].asstr()[:]
    names = sorted(p.name[:-3] for p in tmp_path.glob("*.in"))   # task work:i reads the i-th
    return {names[int(tid.split(":")[1])]: (STATUS_NAMES[int(row["status"])], int(row["attempts"]), message)
            for tid, row, message in zip(ids, tasks, messages)}


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_function_stage_past_timeout_is_killed_and_recorded_as_timeout(tmp_path, ranks):
    """As `run --timeout`: the function runs in a child of its rank, killed at the limit (on one
    rank too, where tasks run in a thread and SIGALRM could not reach them)."""
    faulty(tmp_path, ["ok1", "stuck", "ok2"])
    started = time.monotonic()
    proc = run(tmp_path, "--timeout", "1", ranks=ranks)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert time.monotonic() - started < 60
    rows = record(tmp_path)
    assert rows["stuck"][0] == "timeout" and "--timeout 1 s" in rows["stuck"][2]
    assert rows["ok1"][0] == rows["ok2"][0] == "ok"


def test_isolate_fails_a_crashing_function_task_alone(tmp_path):
    faulty(tmp_path, ["crash", "ok1", "ok2"])
    proc = run(tmp_path, "--isolate", ranks=2)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = record(tmp_path)
    assert rows["crash"][0] == "crashed" and "exit status 3" in rows["crash"][2]
    assert rows["ok1"][0] == rows["ok2"][0] == "ok"


def test_retries_try_a_failed_task_again_and_count_the_attempts(tmp_path):
    faulty(tmp_path, ["flaky1", "flaky2", "ok"])
    proc = run(tmp_path, "--retries", "1", ranks=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = record(tmp_path)
    assert rows == {"flaky1": ("ok", 2, ""), "flaky2": ("ok", 2, ""), "ok": ("ok", 1, "")}
    assert sorted(ran(tmp_path)) == ["flaky1", "flaky1", "flaky2", "flaky2", "ok"]


@pytest.mark.parametrize("flag", [["--max-failures", "1"], ["--fail-fast"]])
def test_max_failures_starts_no_more_tasks_and_exits_1(tmp_path, flag):
    faulty(tmp_path, [f"bad{i:02}" for i in range(16)])
    proc = run(tmp_path, *flag, ranks=2)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stopped early: 1 failed tasks (--max-failures 1)" in proc.stdout
    statuses = [status for status, _, _ in record(tmp_path).values()]
    assert 1 <= statuses.count("failed") < 16 and statuses.count("not-run") == 16 - statuses.count("failed")


@pytest.mark.parametrize("how", ["SIGUSR1 to every process", "Ctrl-C to mpiexec"])
def test_a_stop_signal_stops_cleanly_and_the_same_command_resumes_redoing_nothing(tmp_path, how):
    """As for `run`: no task starts after the signal, the running ones finish, everything
    finished is journalled, exit 75; the same command then runs only the rest."""
    from mtcmpi.errors import EXIT_STOPPED
    from tests.helpers import end_job, signal_job, start

    names = [f"x{i:02}" for i in range(30)]
    faulty(tmp_path, names)
    # Open MPI's mpiexec answers a Ctrl-C with SIGTERM to the ranks 2 s later, SIGKILL 2 s after
    env = {"PYTHONPATH": str(tmp_path), "STAGE_SLEEP": "0.3", "OMPI_MCA_odls_base_sigkill_timeout": "2"}
    job = start(3, ["-m", "mtcmpi", "pipeline", "pipe.py", "--out", "p.h5"], env, str(tmp_path),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = tmp_path / "p.h5.journal"
    try:
        deadline = time.monotonic() + 60
        while not journal.exists() or len(journal.read_text().splitlines()) < 4:
            assert time.monotonic() < deadline and job.poll() is None, "no 4 journalled tasks"
            time.sleep(0.05)
        if how.startswith("SIGUSR1"):   # a batch system's warning (Open MPI's mpiexec forwards it)
            signal_job(job.pid, signal.SIGUSR1)
        else:
            job.send_signal(signal.SIGINT)
        stdout, stderr = job.communicate(timeout=60)
    finally:
        end_job(job.pid)
    assert "stopped early: signal SIG" in stdout, stdout + stderr
    if how.startswith("SIGUSR1"):   # (mpiexec exits its own way after a SIGTERM or Ctrl-C)
        assert job.returncode == EXIT_STOPPED, stdout + stderr
    finished = {json.loads(line)["task"] for line in journal.read_text().splitlines()}
    first = ran(tmp_path)
    assert 4 <= len(finished) < 30 and len(first) == len(set(first)) == len(finished)
    assert {status for status, _, _ in record(tmp_path).values()} == {"ok", "not-run"}
    done = run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    again = ran(tmp_path)
    assert not set(again) & set(first) and sorted(first + again) == names
    assert f"{len(first)} skipped" in done.stdout


@pytest.mark.parametrize("option, words", [(["--timeout", "0"], "--timeout must be > 0"),
                                           (["--retries", "-1"], "--retries must be >= 0"),
                                           (["--grace", "-1"], "--grace must be >= 0")])
def test_options_are_refused_with_the_words_of_run(tmp_path, option, words):
    faulty(tmp_path, ["ok"])
    lines = []
    for args in (["pipeline", "pipe.py"], ["run", "kernels.sleep:task", "--count", "1"]):
        proc = mtcmpi(args + option, ranks=None, cwd=str(tmp_path))
        assert proc.returncode == 2, proc.stderr
        lines.append([line for line in proc.stderr.splitlines() if line.startswith("mtcmpi: error:")])
    assert lines[0] == lines[1] and len(lines[0]) == 1 and words in lines[0][0]


def test_a_task_still_running_at_grace_ends_the_job_with_exit_75_and_the_journal_kept(tmp_path):
    from mtcmpi.errors import EXIT_STOPPED
    from tests.helpers import end_job, signal_job, start

    faulty(tmp_path, ["ok1", "ok2", "ok3", "stuck"])
    job = start(2, ["-m", "mtcmpi", "pipeline", "pipe.py", "--out", "p.h5", "--grace", "1"],
                {"PYTHONPATH": str(tmp_path)}, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = tmp_path / "p.h5.journal"
    try:
        deadline = time.monotonic() + 60
        while not journal.exists() or len(journal.read_text().splitlines()) < 3 or "stuck" not in ran(tmp_path, keep=True):
            assert time.monotonic() < deadline and job.poll() is None, "the quick tasks did not finish"
            time.sleep(0.05)
        signalled = time.monotonic()
        signal_job(job.pid, signal.SIGUSR1)
        stdout, stderr = job.communicate(timeout=60)
    finally:
        end_job(job.pid)
    assert time.monotonic() - signalled < 15
    assert job.returncode == EXIT_STOPPED, stdout + stderr
    assert "still running 1 s after signal SIGUSR1 (--grace)" in stderr and "in the journal" in stderr
    dry = run(tmp_path, "--dry-run", ranks=None)
    assert "3 up to date, 1 would run" in dry.stdout, dry.stdout + dry.stderr


def test_walltime_starts_no_task_that_cannot_finish_and_exits_75(tmp_path):
    from mtcmpi.errors import EXIT_STOPPED

    faulty(tmp_path, [f"slow{i:02}" for i in range(40)])   # 0.2 s each, on one worker
    proc = mtcmpi(["pipeline", "pipe.py", "--out", "p.h5", "--walltime", "0:00:03", "--grace", "1"],
                  ranks=2, cwd=str(tmp_path), timeout=100)
    assert proc.returncode == EXIT_STOPPED, proc.stdout + proc.stderr
    assert "stopped early: walltime" in proc.stdout
    statuses = [status for status, _, _ in record(tmp_path).values()]
    assert statuses.count("ok") >= 1 and statuses.count("not-run") >= 1


def test_a_journal_that_cannot_be_read_is_one_line_and_exit_2(tmp_path):
    faulty(tmp_path, ["ok"])
    (tmp_path / "p.h5.journal").mkdir()
    proc = run(tmp_path, ranks=2)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mtcmpi: error:")]
    assert len(lines) == 1 and "the journal p.h5.journal cannot be read" in lines[0]


def test_a_retry_that_max_failures_keeps_from_starting_leaves_the_failed_try_on_record(tmp_path):
    faulty(tmp_path, [f"bad{i}" for i in range(4)])
    proc = run(tmp_path, "--retries", "3", "--max-failures", "1", ranks=2)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = record(tmp_path)
    failed = [row for row in rows.values() if row[0] == "failed"]
    assert failed and all("is bad" in message for _, _, message in failed)
    assert {status for status, _, _ in rows.values()} <= {"failed", "not-run"}
    assert sum(attempts for _, attempts, _ in rows.values()) < 4 * 4   # not every retry ran
