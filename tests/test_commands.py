"""Tests of mtcmpi.commands: placeholders, the three sources, the runner and a serial engine run."""
from __future__ import annotations

import os
import pickle
import shlex
import sys
import tracemalloc

import pytest

from mtcmpi.commands import (ArgsSource, CommandFailed, CommandRunner, CommandTask, FilesSource,
                             TaskFileSource, command_tasks, render, tail_text)
from mtcmpi.errors import UsageError
from mtcmpi.tasklog import FAILED, OK, SKIPPED, Skipped

pytestmark = pytest.mark.timeout(60)

PY = shlex.quote(sys.executable)
ODD_NAMES = ["plain.inp", "with space.inp", "it's.inp", 'say "hi" $HOME `x`.inp', "dash -n.inp"]


def payloads(source) -> list[CommandTask]:
    assert [tid for tid, _ in source.tasks()] == list(range(source.count()))
    return [payload for _, payload in source.tasks()]


def run_all(source, runner=None) -> list[dict]:
    runner = runner or CommandRunner()
    return [runner(task) for task in payloads(source)]


def make_files(directory, names) -> list[str]:
    for name in names:
        (directory / name).write_text("x")
    return [str(directory / name) for name in names]


def test_render_placeholders():
    value = "dir.d/my file.tar.gz"
    assert render("a {} b {.} c {/} d {/.} e {#} f {x} {{}}", value, 7) == (
        f"a '{value}' b 'dir.d/my file.tar' c 'my file.tar.gz' d 'my file.tar' e 7 f {{x}} {{'{value}'}}")
    assert render("{.}|{/.}", "dir.d/noext", 1, str) == "dir.d/noext|noext"


def test_files_placeholders_quote_odd_names(tmp_path):
    make_files(tmp_path, ODD_NAMES)
    source = FilesSource(str(tmp_path / "*.inp"), "touch {.}.out; printf '%s|%s|%s' {/} {/.} {#}")
    tasks = payloads(source)
    assert [os.path.basename(t.input_path) for t in tasks] == sorted(ODD_NAMES)
    results = run_all(source)
    for number, (name, result) in enumerate(zip(sorted(ODD_NAMES), results), 1):
        stem = name[:-len(".inp")]
        assert result == {"exit_code": 0, "stdout": f"{name}|{stem}|{number}", "stderr": ""}
        assert (tmp_path / (stem + ".out")).is_file()
    assert len(os.listdir(tmp_path)) == 2 * len(ODD_NAMES)


def test_template_without_placeholder_gets_value_appended(tmp_path):
    paths = make_files(tmp_path, ["a b.inp"])
    source, runner = command_tasks(command="printf '<%s>'", files=paths)
    assert payloads(source)[0].command == f"printf '<%s>' '{paths[0]}'"
    assert runner(payloads(source)[0])["stdout"] == f"<{paths[0]}>"


def test_files_list_and_missing_pattern(tmp_path):
    paths = make_files(tmp_path, ["b.inp", "a.inp", "c[1].inp"])
    source = FilesSource(paths + [str(tmp_path / "*.inp")], "true")
    assert source.count() == 6   # given paths keep their order, "c[1].inp" taken literally
    assert [t.input_path for t in payloads(source)][:3] == paths
    assert source.describe(1) == f"task 1 (file {paths[1]})"
    with pytest.raises(UsageError, match=r"--files '.*\*\.nope' matches no files"):
        FilesSource(str(tmp_path / "*.nope"), "true").count()


def test_args_file_lines_and_ids(tmp_path):
    args = tmp_path / "args.txt"
    args.write_text("first line.txt\n\n  \nsecond 'quoted'\n# not a comment\n")
    source = ArgsSource(str(args), "printf '%s;%s;' {} {#}; printf %s {.}")
    assert source.count() == 3
    assert [r["stdout"] for r in run_all(source)] == ["first line.txt;1;first line",
                                                       "second 'quoted';2;second 'quoted'",
                                                       "# not a comment;3;# not a comment"]
    assert source.describe(1) == f"task 1 (line 4 of {args})"


def test_args_file_non_utf8_name_round_trips(tmp_path):
    args = tmp_path / "args.txt"
    args.write_bytes(bytes(tmp_path) + b"/caf\xe9\n")
    run_all(ArgsSource(str(args), "touch {}"))
    assert b"caf\xe9" in os.listdir(bytes(tmp_path))


def test_taskfile_comments_blank_lines_and_ids(tmp_path):
    taskfile = tmp_path / "tasks.txt"
    taskfile.write_text("# a comment\n\necho one\n   # indented comment\necho 'two {}'  # trailing\n"
                        "exit 3\n")
    source = TaskFileSource(str(taskfile))
    assert source.count() == 3
    tasks = payloads(source)
    assert [t.command for t in tasks] == ["echo one", "echo 'two {}'  # trailing", "exit 3"]
    assert [source.describe(i) for i in range(3)] == [f"task {i} (line {n} of {taskfile})"
                                                      for i, n in enumerate([3, 5, 6])]
    runner = CommandRunner()
    assert [runner(t)["stdout"] for t in tasks[:2]] == ["one", "two {}"]


def test_taskfile_bad_quoting_names_line(tmp_path):
    taskfile = tmp_path / "tasks.txt"
    taskfile.write_text("echo ok\n\necho 'unclosed\n")
    with pytest.raises(UsageError, match=r"tasks.txt', line 3: bad shell quoting .*echo 'unclosed"):
        TaskFileSource(str(taskfile)).count()


@pytest.mark.parametrize("option", ["--args", "--taskfile"])
def test_missing_line_file(tmp_path, option):
    missing = str(tmp_path / "no.txt")
    source = ArgsSource(missing, "x") if option == "--args" else TaskFileSource(missing)
    with pytest.raises(UsageError, match=f"^{option} '.*no.txt': No such file or directory$"):
        source.count()


def test_empty_taskfile_is_no_tasks(tmp_path):
    (tmp_path / "t.txt").write_text("# nothing\n\n")
    assert TaskFileSource(str(tmp_path / "t.txt")).count() == 0


def run_command(command: str, runner=None, tid: int = 0):
    return (runner or CommandRunner())(CommandTask(tid, command, None, None))


def test_failing_command_keeps_exit_code_and_stderr_tail():
    with pytest.raises(CommandFailed) as info:
        run_command("echo out; for i in $(seq 30); do echo err $i >&2; done; exit 3")
    exc = info.value
    assert (exc.exit_code, str(exc), exc.stdout) == (3, "exit 3: err 30", "out")
    assert exc.stderr.split("\n") == [f"err {i}" for i in range(11, 31)]
    assert "stderr (last lines):\nerr 11" in exc.__notes__[1]
    again = pickle.loads(pickle.dumps(exc))
    assert (again.exit_code, str(again), again.stderr) == (3, "exit 3: err 30", exc.stderr)


@pytest.mark.parametrize("command, exit_code, message", [
    ("false", 1, "exit 1"),
    ("no-such-program-xyz --flag", 127, "command not found: no-such-program-xyz"),
    ("echo not me >&2; exit 127", 127, "exit 127: not me"),
    ("kill -9 $$", -9, "killed by signal 9 (Killed)"),
])
def test_failure_messages(command, exit_code, message):
    with pytest.raises(CommandFailed) as info:
        run_command(command)
    assert (info.value.exit_code, str(info.value)) == (exit_code, message)


def test_non_utf8_output_is_replaced():
    assert run_command(r"printf 'ok \377\376\n'; printf '\351t\351' >&2") == {
        "exit_code": 0, "stdout": "ok \ufffd\ufffd", "stderr": "\ufffdt\ufffd"}


def test_stdin_is_devnull():
    assert run_command("cat")["stdout"] == ""


def test_tail_text_cuts_partial_first_line():
    assert tail_text(b"abc\ndef\nghi", keep=6, lines=20) == "ghi"      # 'ef' was cut: dropped
    assert tail_text(b"abc\ndef\nghi", keep=8, lines=20) == "def\nghi"  # cut just after a newline
    assert tail_text(b"x" * 10, keep=4, lines=20) == "xxxx"             # one long line: its end
    assert tail_text(b"a\nb\nc\n", keep=100, lines=2) == "b\nc"


def test_huge_output_bounded_in_memory_and_whole_in_output_dir(tmp_path):
    size = 50_000_000
    command = f"head -c {size} /dev/zero | tr '\\0' x; echo; seq 5 >&2"
    tracemalloc.start()
    try:
        result = run_command(command)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert result["stdout"] == "x" * 4095 and result["stderr"] == "1\n2\n3\n4\n5"
    result = run_command(command, CommandRunner(output_dir=str(tmp_path / "out")), tid=7)
    assert result["stdout"] == "x" * 4095   # the last 4096 bytes end with a newline
    assert os.path.getsize(tmp_path / "out" / "7.out") == size + 1
    assert (tmp_path / "out" / "7.err").read_text() == "1\n2\n3\n4\n5\n"


def test_many_lines_keep_last_twenty():
    stdout = run_command("yes | head -n 2000000; seq 100")["stdout"]
    assert stdout == "\n".join(map(str, range(81, 101)))


def test_output_dir_failure_keeps_files(tmp_path):
    runner = CommandRunner(output_dir=str(tmp_path))
    with pytest.raises(CommandFailed) as info:
        run_command("echo good; echo bad >&2; exit 2", runner, tid=3)
    assert (str(info.value), info.value.stdout) == ("exit 2: bad", "good")
    assert (tmp_path / "3.out").read_text() == "good\n"
    assert (tmp_path / "3.err").read_text() == "bad\n"


def test_command_runs_in_its_own_session():
    out = run_command(f"sleep 30 & {PY} -c 'import os; print(os.getsid(0), os.getpgrp())'; "
                      "kill $!; wait")["stdout"]
    sid, pgid = map(int, out.split())
    assert sid == pgid != os.getsid(0)


def test_skip_existing_files_compares_mtimes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_files(tmp_path, ["new.inp", "old.inp", "none.inp"])
    (tmp_path / "new.out").write_text("done")
    (tmp_path / "old.out").write_text("stale")
    os.utime(tmp_path / "old.out", (1, 1))
    source, runner = command_tasks(command="echo ran > {.}.out", files="*.inp", skip_existing="{.}.out")
    tasks = payloads(source)
    assert [t.done_path for t in tasks] == ["new.out", "none.out", "old.out"]
    with pytest.raises(Skipped):
        runner(tasks[0])
    runner(tasks[1])
    runner(tasks[2])
    assert [(tmp_path / n).read_text() for n in ["new.out", "none.out", "old.out"]] == [
        "done", "ran\n", "ran\n"]


def test_skip_existing_args_and_taskfile_only_need_the_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "args.txt").write_text("a\nb\n")
    (tmp_path / "tasks.txt").write_text("touch x\ntouch y\n")
    for name in ["a.done", "2.flag"]:
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (1, 1))   # old, but there is no input to be older than
    runner = CommandRunner()
    a, b = payloads(ArgsSource("args.txt", "touch {}.done", "{}.done"))
    with pytest.raises(Skipped):
        runner(a)
    runner(b)
    x, y = payloads(TaskFileSource("tasks.txt", "{#}.flag"))
    runner(x)
    with pytest.raises(Skipped, match="2.flag"):
        runner(y)
    assert sorted(os.listdir(tmp_path)) == ["2.flag", "a.done", "args.txt", "b.done", "tasks.txt", "x"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(command="x"), "exactly one of --files or --args"),
    (dict(command="x", files="a", args_file="b"), "exactly one of --files or --args"),
    (dict(files="a"), "need --command"),
    (dict(), "give --command with --files or --args, or --taskfile"),
    (dict(taskfile="t", command="x"), "do not combine"),
    (dict(taskfile="t", files="a"), "do not combine"),
    (dict(command="  ", files="a"), "--command is empty"),
    (dict(taskfile="t", skip_existing=""), "--skip-existing is empty"),
])
def test_command_tasks_rejects_bad_combinations(kwargs, message):
    with pytest.raises(UsageError, match=message):
        command_tasks(**kwargs)


def test_output_dir_that_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="--output-dir .*: Not a directory"):
        CommandRunner(output_dir=str(tmp_path / "file" / "sub"))


def test_engine_run_records_ok_failed_skipped(tmp_path):
    from mtcmpi.job import run_job
    from mtcmpi.world import World

    make_files(tmp_path, ["a.inp", "b.inp", "c.inp"])
    (tmp_path / "c.out").write_text("")
    source, runner = command_tasks(
        command="test {/.} != b || { echo {/} is bad >&2; exit 5; }; touch {.}.out",
        files=str(tmp_path / "*.inp"), skip_existing=str(tmp_path / "{/.}.out"),
        output_dir=str(tmp_path / "logs"))
    outcome = run_job(World.of(), runner, source)
    log = outcome.log
    assert (outcome.n, outcome.exit_code) == (3, 1)
    assert list(log.ids) == [0, 1, 2] and list(log.status) == [OK, FAILED, SKIPPED]
    assert log.results[0] == {"exit_code": 0, "stdout": "", "stderr": ""}
    failure = log.failures[1]
    assert (failure.type, failure.message) == ("CommandFailed", "exit 5: b.inp is bad")
    assert "stderr (last lines):\nb.inp is bad" in failure.traceback
    total = outcome.summary.total
    assert (total.ok, total.failed, total.skipped) == (1, 1, 1)
    assert sorted(os.listdir(tmp_path / "logs")) == ["0.err", "0.out", "1.err", "1.out"]
