"""End to end: `mpiexec -n N python -m mtcmpi run ...` as a user starts it."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, mtcmpi, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_help_explains_every_option_with_examples():
    top = mtcmpi(["--help"], ranks=None)
    run = mtcmpi(["run", "--help"], ranks=None)
    assert top.returncode == run.returncode == 0
    assert "run" in top.stdout and "examples:" in top.stdout
    for word in ("--count", "--params", "--schedule", "--chunk", "--prefetch", "static:cyclic",
                 "guided", "mpirun -n 64 python -m mtcmpi run", "exit status"):
        assert word in run.stdout


@pytest.mark.parametrize("schedule", ["dynamic", "static", "guided"])
def test_sleep_kernel_on_three_ranks(schedule):
    proc = mtcmpi(["run", "kernels.sleep:task", "--count", "12", "--schedule", schedule], ranks=3)
    assert proc.returncode == 0, proc.stderr
    assert f"12 tasks on 3 ranks ({schedule}" in proc.stdout and "12 ok, 0 failed" in proc.stdout
    assert proc.stdout.count("mtcmpi: 12 tasks") == 1        # rank 0 alone prints


def test_params_file_rows_become_arguments(tmp_path):
    (tmp_path / "scan.csv").write_text("a,b\n1,2\n3,4\n5,6\n")
    proc = mtcmpi(["run", "tests.tasks_for_tests:add", "--params", str(tmp_path / "scan.csv")])
    assert proc.returncode == 0, proc.stderr
    assert "3 tasks on 2 ranks" in proc.stdout and "3 ok, 0 failed" in proc.stdout


def test_failed_tasks_give_exit_1_and_a_grouped_summary():
    proc = mtcmpi(["run", "tests.tasks_for_tests:maybe_fail", "--count", "20"], ranks=3)
    assert proc.returncode == 1
    assert "16 ok, 4 failed" in proc.stdout
    assert "ValueError x4 (first: task 3: x=3 is unlucky)" in proc.stdout
    assert "task 3 failed on rank" in proc.stdout


@pytest.mark.parametrize("args, words", [
    (["nosuchmod_q:f", "--count", "3"], "cannot import module 'nosuchmod_q'"),
    (["tests.tasks_for_tests:NOT_CALLABLE", "--count", "3"], "not callable"),
    (["tests.tasks_for_tests:add", "--params", "/nonexistent/p.csv"], "No such file"),
    (["tests.tasks_for_tests:square", "--count", "3", "--schedule", "fastest"], "unknown schedule"),
])
def test_bad_input_is_one_line_on_rank_0_and_exit_2_everywhere(args, words):
    t0 = time.monotonic()
    proc = mtcmpi(["run", *args], ranks=4)
    assert proc.returncode == 2
    assert time.monotonic() - t0 < 30
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mtcmpi: error:")]
    assert len(errors) == 1 and words in errors[0]
    assert "Traceback" not in proc.stderr


def test_malformed_params_name_the_line(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3\n")
    proc = mtcmpi(["run", "tests.tasks_for_tests:add", "--params", str(tmp_path / "bad.csv")])
    assert proc.returncode == 2 and "line 3: 1 values for 2 columns" in proc.stderr


def test_wrong_arguments_for_the_function(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"a": 1, "c": 2}) + "\n")
    proc = mtcmpi(["run", "tests.tasks_for_tests:add", "--params", str(tmp_path / "p.jsonl")])
    assert proc.returncode == 2 and "cannot take the arguments of row 0" in proc.stderr


def test_usage_error_prints_once():
    proc = mtcmpi(["run", "tests.tasks_for_tests:add"], ranks=4)
    assert proc.returncode == 2
    assert proc.stderr.count("a target needs exactly one of --count N or --params FILE") == 1


def test_one_rank_runs_serially_without_mpiexec():
    proc = mtcmpi(["run", "tests.tasks_for_tests:square", "--count", "5"], ranks=None)
    assert proc.returncode == 0 and "5 tasks on 1 ranks" in proc.stdout


def test_more_ranks_than_tasks_and_zero_tasks():
    few = mtcmpi(["run", "tests.tasks_for_tests:square", "--count", "2"], ranks=4)
    none = mtcmpi(["run", "tests.tasks_for_tests:square", "--count", "0", "--schedule", "static"], ranks=3)
    assert few.returncode == 0 and "2 ok, 0 failed" in few.stdout
    assert none.returncode == 0 and "0 tasks on 3 ranks" in none.stdout


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "mtcmpi")
    assert shutil.which(exe), "the mtcmpi console script is missing from the venv"
    proc = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--schedule" in proc.stdout


def test_command_per_file_then_a_rerun_skips_everything(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.inp", "b c.inp", "it's.inp"):
        (data / name).write_text("x")
    args = ["run", "--command", "touch {.}.out", "--files", str(data / "*.inp"),
            "--skip-existing", "{.}.out"]
    first = mtcmpi(args, ranks=3)
    assert first.returncode == 0, first.stderr
    assert "3 ok, 0 failed" in first.stdout
    assert sorted(p.name for p in data.glob("*.out")) == ["a.out", "b c.out", "it's.out"]
    again = mtcmpi(args, ranks=3)
    assert again.returncode == 0 and "0 ok, 0 failed, 3 skipped (already done)" in again.stdout


def test_taskfile_commands_and_failures(tmp_path):
    (tmp_path / "tasks.txt").write_text("# a comment\ntrue\n\nexit 3\nno_such_command_zz\n")
    proc = mtcmpi(["run", "--taskfile", str(tmp_path / "tasks.txt"), "--output-dir",
                   str(tmp_path / "logs")], ranks=2)
    assert proc.returncode == 1
    assert "1 ok, 2 failed" in proc.stdout
    assert "CommandFailed x2" in proc.stdout and "exit 3" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "logs").iterdir())[:2] == ["0.err", "0.out"]


def test_taskfile_with_bad_quoting_is_refused(tmp_path):
    (tmp_path / "tasks.txt").write_text("echo ok\necho 'unclosed\n")
    proc = mtcmpi(["run", "--taskfile", str(tmp_path / "tasks.txt")], ranks=2)
    assert proc.returncode == 2 and "line 2: bad shell quoting" in proc.stderr


def test_target_and_command_options_do_not_mix():
    proc = mtcmpi(["run", "tests.tasks_for_tests:square", "--count", "3", "--command", "true"], ranks=2)
    assert proc.returncode == 2 and "drop the command-task options" in proc.stderr


def test_exec_runs_a_driver_on_rank_0_and_tasks_on_the_others(tmp_path):
    (tmp_path / "drive.py").write_text(
        "import os, sys\nimport mtcmpi\n\n"
        "def pid(x):\n    return os.getpid()\n\n"
        "if __name__ == '__main__':\n"
        "    with mtcmpi.Executor() as ex:\n"
        "        pids = list(ex.map(pid, range(20)))\n"
        "    print('args', sys.argv[1:], 'workers', len(set(pids)), 'me', os.getpid() in pids)\n")
    proc = mtcmpi(["exec", str(tmp_path / "drive.py"), "-v", "x"], ranks=3, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "args ['-v', 'x'] workers 2 me False" in proc.stdout


def test_an_internal_error_on_one_rank_aborts_the_whole_job_quickly():
    t0 = time.monotonic()
    proc = mtcmpi(["run", "tests.tasks_for_tests:breaks_the_protocol", "--count", "4"], ranks=3)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 3
    assert proc.stderr.count("mtcmpi: internal error on rank 0") == 1 and "aborting the job" in proc.stderr


def test_plot_draws_a_gantt_chart_and_utilization_from_a_run(tmp_path):
    out = tmp_path / "r.h5"
    assert mtcmpi(["run", "tests.tasks_for_tests:maybe_fail", "--count", "30", "--out", str(out)],
                  ranks=3).returncode == 1
    proc = mtcmpi(["plot", str(out), "--gantt", str(tmp_path / "g.png"), "--utilization",
                   str(tmp_path / "u.png")], ranks=None)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "g.png").stat().st_size > 10_000 and (tmp_path / "u.png").stat().st_size > 10_000


def test_ranks_that_see_another_task_module_stop_the_run_with_one_message(tmp_path):
    """Two app contexts of one mpiexec, each with its own copy of the module on PYTHONPATH,
    as two nodes that mount different versions of it."""
    for name, body in (("a", "def f(x):\n    return x\n"), ("b", "def f(x):\n    return -x\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "mymodel.py").write_text(body)
    args = ["-m", "mtcmpi", "run", "mymodel:f", "--count", "4"]
    a, b = ((1, {"PYTHONPATH": f"{tmp_path / d}{os.pathsep}{ROOT}"}) for d in "ab")
    proc = run([a, b], args, 60, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("mtcmpi: error: rank 1 on ") == 1, proc.stderr
    assert "runs other code than rank 0" in proc.stderr and "task module mymodel" in proc.stderr
    assert "Traceback" not in proc.stderr and "0 ok" not in proc.stdout
    same = run([a, a], args, 60, cwd=str(tmp_path))
    assert same.returncode == 0 and "4 ok, 0 failed" in same.stdout, same.stderr


def one_error_line(proc) -> str:
    """The one 'mtcmpi: error:' line of a run, with no traceback beside it."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mtcmpi: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_a_task_that_raises_any_base_exception_fails_alone_and_the_run_goes_on(tmp_path, schedule):
    (tmp_path / "leaves.py").write_text(
        "import asyncio\n\nclass Odd(BaseException):\n    pass\n\n"
        "RAISED = [KeyboardInterrupt, asyncio.CancelledError, GeneratorExit, Odd, SystemExit]\n\n"
        "def f(i):\n    if i % 2:\n        raise RAISED[i // 2]()\n    return i\n")
    proc = mtcmpi(["run", "leaves:f", "--count", "10", "--schedule", schedule], ranks=3,
                  cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "5 ok, 5 failed" in proc.stdout
    for name in ("KeyboardInterrupt", "CancelledError", "GeneratorExit", "Odd", "SystemExit"):
        assert f"{name} x1" in proc.stdout, proc.stdout


@pytest.mark.parametrize("leave, words", [("sys.exit('rank 1 has no licence')", "SystemExit: rank 1 has no licence"),
                                          ("raise KeyboardInterrupt", "KeyboardInterrupt")])
def test_one_rank_leaving_while_importing_the_task_module_is_one_line_and_exit_2_everywhere(tmp_path, leave, words):
    (tmp_path / "picky.py").write_text(f"import sys\nfrom mpi4py import MPI\nif MPI.COMM_WORLD.rank == 1:\n"
                                       f"    {leave}\n\ndef f(i):\n    return i\n")
    proc = mtcmpi(["run", "picky:f", "--count", "4"], ranks=3, cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc)
    assert "importing 'picky'" in line and words in line


def test_a_task_that_uses_mpi_under_timeout_fails_with_a_clear_message(tmp_path):
    (tmp_path / "collective.py").write_text("from mpi4py import MPI\n\ndef f(i):\n"
                                            "    MPI.COMM_WORLD.Barrier()\n    return i\n")
    proc = mtcmpi(["run", "collective:f", "--count", "4", "--timeout", "3"], ranks=3,
                  cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "RuntimeError x4" in proc.stdout and "must not use MPI" in proc.stdout


@pytest.mark.parametrize("name, data, words", [
    ("latin.csv", "a\ncaf\xe9\n".encode("latin-1"), "line 2: not UTF-8"),
    ("dup.csv", b"a,a\n1,2\n", "column 'a' appears more than once"),
])
def test_unreadable_params_are_one_line(tmp_path, name, data, words):
    (tmp_path / name).write_bytes(data)
    proc = mtcmpi(["run", "tests.tasks_for_tests:add", "--params", str(tmp_path / name)], ranks=2)
    assert proc.returncode == 2 and words in one_error_line(proc)


def test_a_crlf_copy_of_the_params_resumes_the_same_run(tmp_path):
    (tmp_path / "p.csv").write_bytes(b"a,b\n1,2\n3,4\n")
    out = str(tmp_path / "r.h5")
    first = mtcmpi(["run", "tests.tasks_for_tests:add", "--params", str(tmp_path / "p.csv"), "--out", out])
    assert first.returncode == 0, first.stderr
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4\r\n")
    again = mtcmpi(["run", "tests.tasks_for_tests:add", "--params", str(tmp_path / "p.csv"), "--out", out])
    assert again.returncode == 0 and "all 2 tasks were done by an earlier run" in again.stdout, again.stderr


def test_a_cost_function_that_exits_on_rank_0_is_one_line_and_exit_2_everywhere(tmp_path):
    (tmp_path / "costly.py").write_text("import sys\n\ndef f(i):\n    return i\n\n"
                                        "def cost(i):\n    sys.exit('no cost model here')\n")
    proc = mtcmpi(["run", "costly:f", "--count", "4", "--cost", "costly:cost"], ranks=3,
                  cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "SystemExit: no cost model here" in one_error_line(proc)
