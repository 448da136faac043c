"""Command tasks: run a shell command once per file, argument line or task-file line.

This is the GNU-parallel side of mtcmpi, for the user whose task is a program, not a Python
function (`python runner.py data/0001.inp` for each of 9,999 inputs):

    --command 'python runner.py {}' --files 'data/*.inp'   the template once per file
    --command 'convert {} {.}.png' --args list.txt          once per line of list.txt
    --taskfile tasks.txt                                    each line is a whole command

Placeholders, as in GNU parallel: {} the value (a path, or an argument line), {.} the value
without its extension, {/} its base name, {/.} its base name without extension, and {#} the
task number, which is the task id + 1 (1-based, like GNU parallel's {#}). Values are shell-quoted,
so names with spaces or quotes are safe; a template without placeholders gets ' {}' appended.
Task-file lines are run as written: they are commands, not templates.

--skip-existing TEMPLATE makes reruns make-like: the template (same placeholders, not quoted)
names a task's output; with --files the task is skipped when that output exists and is at least
as new as its input, with --args and --taskfile (no input file to compare) whenever it exists.

Sources render each command on rank 0 as the tasks stream out, so a worker receives a ready
CommandTask and only starts `/bin/sh -c` in its own session (process group), stdin from
/dev/null. A non-zero exit is a failed task (CommandFailed). Only the tails of stdout and stderr
are kept in memory, whatever a command prints; --output-dir keeps both whole, as DIR/<id>.out and
DIR/<id>.err (the 0-based task id, {#} - 1), written by the command itself.
"""
from __future__ import annotations

import glob
import os
import re
import select
import shlex
import signal
import subprocess
from itertools import islice
from typing import Callable, Iterator, NamedTuple, Sequence

from .errors import UsageError
from .isolate import CommandDeadline
from .tasklog import Skipped
from .tasks import Source, Task

SHELL = "/bin/sh"
PLACEHOLDER = re.compile(r"\{(/?\.?|#)\}")   # {} {.} {/} {/.} {#}
READ_BYTES = 1 << 16
MESSAGE_CHARS = 200   # of the stderr line quoted in a failure message
NOT_FOUND = re.compile(r"([^:]*): (?:command )?not found$")   # dash, and bash as sh


def _stem(path: str) -> str:
    return os.path.splitext(path)[0]


PARTS: dict[str, Callable[[str], str]] = {
    "": str,
    ".": _stem,
    "/": os.path.basename,
    "/.": lambda path: _stem(os.path.basename(path)),
}


def command_template(text: str) -> str:
    """A --command template, with ' {}' appended when it has no placeholder."""
    if not text.strip():
        raise UsageError("--command is empty")
    return text if PLACEHOLDER.search(text) else text + " {}"


def render(template: str, value: str, number: int,
           quote: Callable[[str], str] = shlex.quote) -> str:
    """The template with its placeholders filled from value and the 1-based task number."""
    def field(match: re.Match) -> str:
        key = match.group(1)
        return str(number) if key == "#" else quote(PARTS[key](value))
    return PLACEHOLDER.sub(field, template)


class CommandTask(NamedTuple):
    """The payload of one command task, complete so that a worker needs nothing else."""

    id: int                   # names the --output-dir files
    command: str              # rendered, for /bin/sh -c
    input_path: str | None    # the input file (--files), compared with done_path by mtime
    done_path: str | None     # the rendered --skip-existing path


class CommandSource(Source):
    """What the three command sources share: (value, input) pairs become CommandTasks, each
    passed to the runner as its one argument (the default call, CALL_ONE)."""

    def __init__(self, template: str | None, skip_existing: str | None):
        self.template = template   # None: the value is the command itself
        self.skip_existing = skip_existing

    def values(self) -> Iterator[tuple[str, str | None]]:
        """(value, input file or None) of every task, in id order."""
        raise NotImplementedError

    def make_task(self, tid: int, value: str, input_path: str | None) -> CommandTask:
        number = tid + 1
        command = value if self.template is None else render(self.template, value, number)
        done = None if self.skip_existing is None else render(self.skip_existing, value, number, str)
        return CommandTask(tid, command, input_path, done)

    def tasks(self) -> Iterator[Task]:
        for tid, (value, input_path) in enumerate(self.values()):
            yield tid, self.make_task(tid, value, input_path)


class FilesSource(CommandSource):
    """--files: one task per file; each pattern's matches are sorted, so task ids are stable.

    An entry naming an existing file is taken as it is (the shell may have expanded the glob
    already); otherwise it is a glob pattern (** included), and one matching nothing is an error.
    """

    def __init__(self, files: str | Sequence[str], template: str, skip_existing: str | None = None):
        super().__init__(command_template(template), skip_existing)
        self.patterns = [files] if isinstance(files, str) else list(files)
        self._paths: list[str] | None = None

    def paths(self) -> list[str]:
        """The files, expanded once per process so count() and tasks() agree."""
        if self._paths is None:
            self._paths = [path for pattern in self.patterns for path in self.expand(pattern)]
        return self._paths

    @staticmethod
    def expand(pattern: str) -> list[str]:
        if os.path.lexists(pattern):
            return [pattern]
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise UsageError(f"--files {pattern!r} matches no files")
        return matches

    def count(self) -> int:
        return len(self.paths())

    def values(self) -> Iterator[tuple[str, str | None]]:
        return ((path, path) for path in self.paths())

    def describe(self, tid: int) -> str:
        return f"task {tid} (file {self.paths()[tid]})"


class LinesSource(CommandSource):
    """A text file with one task per line; blank lines are not tasks, ids count the others."""

    option = ""

    def __init__(self, path: str, template: str | None, skip_existing: str | None):
        super().__init__(template, skip_existing)
        self.path = path

    def is_task(self, text: str) -> bool:
        return bool(text.strip())

    def lines(self) -> Iterator[tuple[int, str]]:
        """(line number, text without its newline) of every task line."""
        try:
            f = open(self.path, encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise UsageError(f"{self.option} {self.path!r}: {exc.strerror}") from None
        with f:
            for lineno, line in enumerate(f, 1):
                text = line.rstrip("\n")
                if self.is_task(text):
                    yield lineno, text

    def count(self) -> int:
        return sum(1 for _ in self.lines())

    def values(self) -> Iterator[tuple[str, str | None]]:
        return ((text, None) for _, text in self.lines())

    def describe(self, tid: int) -> str:
        lineno, _ = next(islice(self.lines(), tid, None))
        return f"task {tid} (line {lineno} of {self.path})"


class ArgsSource(LinesSource):
    """--args FILE: each non-blank line is the {} value of one task, taken verbatim."""

    option = "--args"

    def __init__(self, path: str, template: str, skip_existing: str | None = None):
        super().__init__(path, command_template(template), skip_existing)


class TaskFileSource(LinesSource):
    """--taskfile FILE: each line is one shell command; blank lines and # comments are not tasks.

    count() checks every line's shell quoting, so an unclosed quote stops the run before it starts.
    """

    option = "--taskfile"

    def __init__(self, path: str, skip_existing: str | None = None):
        super().__init__(path, None, skip_existing)

    def is_task(self, text: str) -> bool:
        return bool(text.strip()) and not text.lstrip().startswith("#")

    def count(self) -> int:
        n = 0
        for lineno, text in self.lines():
            try:
                shlex.split(text)
            except ValueError as exc:
                raise UsageError(f"--taskfile {self.path!r}, line {lineno}: bad shell quoting "
                                 f"({exc}): {text}") from None
            n += 1
        return n


class CommandFailed(Exception):
    """A command that exited non-zero (exit_code > 0) or was killed (exit_code = -signal)."""

    def __init__(self, exit_code: int, message: str, stdout: str, stderr: str):
        super().__init__(exit_code, message, stdout, stderr)   # all args, so it pickles
        self.exit_code, self.message, self.stdout, self.stderr = exit_code, message, stdout, stderr
        for name, tail in (("stdout", stdout), ("stderr", stderr)):
            if tail:
                self.add_note(f"{name} (last lines):\n{tail}")   # shown in the failure's traceback

    def __str__(self) -> str:
        return self.message


def failure_message(exit_code: int, stderr: str) -> str:
    """One line: 'exit 3: <last stderr line>', 'killed by signal 9 (Killed)', 'command not found: x'."""
    if exit_code < 0:
        return f"killed by signal {-exit_code} ({signal.strsignal(-exit_code) or 'unknown'})"
    last = next((line.strip() for line in reversed(stderr.split("\n"))   # not a banner's rule
                 if any(c.isalnum() for c in line)), "")[:MESSAGE_CHARS]
    missing = NOT_FOUND.search(last) if exit_code == 127 else None
    if missing:
        return f"command not found: {missing.group(1).strip()}"
    return f"exit {exit_code}: {last}" if last else f"exit {exit_code}"


def tail_text(data: bytes, keep: int, lines: int) -> str:
    """The last `lines` lines within the last `keep` bytes of data, decoded leniently.

    data may hold one byte more than keep: it tells whether the first kept line is whole; a
    cut line is dropped unless it is the only one.
    """
    cut = len(data) > keep and data[-keep - 1] != ord("\n")
    data = data[-keep:].rstrip(b"\n")
    if cut and b"\n" in data:
        data = data[data.index(b"\n") + 1:]
    return "\n".join(data.decode("utf-8", "replace").split("\n")[-lines:])


def drain(fds: Sequence[int], keep: int, deadline: CommandDeadline, pgid: int) -> list[bytes]:
    """Read the pipes until every writer closed them; the last keep+1 bytes of each. At the
    deadline, kill process group pgid and raise TaskTimeout."""
    tails = {fd: bytearray() for fd in fds}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    open_fds = len(fds)
    while open_fds:
        ready = poller.poll(deadline.left_ms())
        if not ready:
            deadline.expire(pgid)
        for fd, _ in ready:
            chunk = os.read(fd, READ_BYTES)
            if not chunk:
                poller.unregister(fd)
                open_fds -= 1
                continue
            buf = tails[fd]
            buf += chunk
            if len(buf) > 2 * keep + 1:
                del buf[:-(keep + 1)]
    return [bytes(tails[fd]) for fd in fds]


def file_tail(fd: int, keep: int) -> bytes:
    """The last keep+1 bytes of an open file."""
    size = os.fstat(fd).st_size
    return os.pread(fd, keep + 1, max(0, size - keep - 1))


def already_done(task: CommandTask) -> bool:
    """True when --skip-existing's output exists and is not older than the input (if any)."""
    if task.done_path is None:
        return False
    try:
        done = os.stat(task.done_path).st_mtime_ns
        return task.input_path is None or done >= os.stat(task.input_path).st_mtime_ns
    except OSError:
        return False


class CommandRunner:
    """The task function of command tasks: runner(CommandTask) -> {"exit_code", "stdout", "stderr"}.

    Built from the command line on every rank. Raises Skipped for work already done and
    CommandFailed for a non-zero exit; stdout and stderr are tails (tail_lines lines within
    tail_bytes bytes), or whole files in output_dir.
    """

    def __init__(self, output_dir: str | None = None, tail_lines: int = 20, tail_bytes: int = 4096,
                 timeout: float | None = None, env: dict[str, str] | None = None,
                 deadline: type[CommandDeadline] = CommandDeadline):
        if output_dir is not None:
            try:
                os.makedirs(output_dir, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"--output-dir {output_dir!r}: {exc.strerror}") from None
        self.output_dir = output_dir
        self.tail_lines, self.tail_bytes = tail_lines, tail_bytes
        self.timeout = timeout
        self.env, self.deadline = env, deadline   # groups.py: a clean MPI environment, TERM first

    def __call__(self, task: CommandTask) -> dict:
        if already_done(task):
            raise Skipped(task.done_path)
        run = self.run_piped if self.output_dir is None else self.run_to_files
        exit_code, out, err = run(task)
        stdout, stderr = (tail_text(t, self.tail_bytes, self.tail_lines) for t in (out, err))
        if exit_code:
            raise CommandFailed(exit_code, failure_message(exit_code, stderr), stdout, stderr)
        return {"exit_code": 0, "stdout": stdout, "stderr": stderr}

    def start(self, command: str, stdout, stderr) -> subprocess.Popen:
        return subprocess.Popen([SHELL, "-c", command], stdin=subprocess.DEVNULL, env=self.env,
                                stdout=stdout, stderr=stderr, start_new_session=True)

    def run_piped(self, task: CommandTask) -> tuple[int, bytes, bytes]:
        with self.start(task.command, subprocess.PIPE, subprocess.PIPE) as proc:
            deadline = self.deadline(self.timeout)
            out, err = drain([proc.stdout.fileno(), proc.stderr.fileno()], self.tail_bytes,
                             deadline, proc.pid)
            return deadline.wait(proc), out, err

    def run_to_files(self, task: CommandTask) -> tuple[int, bytes, bytes]:
        base = os.path.join(self.output_dir, str(task.id))
        with open(base + ".out", "w+b") as out, open(base + ".err", "w+b") as err:
            with self.start(task.command, out, err) as proc:
                exit_code = self.deadline(self.timeout).wait(proc)
            return exit_code, *(file_tail(f.fileno(), self.tail_bytes) for f in (out, err))


def command_tasks(command: str | None = None, files: str | Sequence[str] | None = None,
                  args_file: str | None = None, taskfile: str | None = None,
                  skip_existing: str | None = None, output_dir: str | None = None,
                  timeout: float | None = None) -> tuple[CommandSource, CommandRunner]:
    """The source and task function of a command run, from the command-line values."""
    if skip_existing is not None and not skip_existing.strip():
        raise UsageError("--skip-existing is empty")
    if taskfile is not None:
        if command is not None or files is not None or args_file is not None:
            raise UsageError("--taskfile lines are whole commands: do not combine it with "
                             "--command, --files or --args")
        source: CommandSource = TaskFileSource(taskfile, skip_existing)
    elif command is None:
        raise UsageError("--files and --args need --command (the template to run for each)"
                         if files is not None or args_file is not None else
                         "give --command with --files or --args, or --taskfile")
    elif (files is None) == (args_file is None):
        raise UsageError("--command needs exactly one of --files or --args")
    elif files is not None:
        source = FilesSource(files, command, skip_existing)
    else:
        source = ArgsSource(args_file, command, skip_existing)
    return source, CommandRunner(output_dir, timeout=timeout)
