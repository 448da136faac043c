"""The errors mtcmpi tells users about, the exit codes every rank leaves with, and how an
exception from another process is described and stands in for itself."""
from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Callable, NamedTuple, TextIO

EXIT_OK = 0             # every task succeeded
EXIT_TASKS_FAILED = 1   # the run finished, some tasks failed (the summary says which and why)
EXIT_USAGE = 2          # bad input: target, params file, options (one line on rank 0 says what)
EXIT_INTERNAL = 3       # an unexpected error inside mtcmpi; the job was aborted
EXIT_STOPPED = 75       # stopped early by a signal or the walltime: run the same command to resume
                        # (75 is EX_TEMPFAIL in sysexits.h: "try again later")

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def say(line: str, stream: TextIO | None = None) -> None:
    """Write one line (to stderr by default) in one write, and flush it. print() writes the text
    and its newline apart when Python is unbuffered (PYTHONUNBUFFERED, common in job scripts),
    and mpiexec, which forwards stdout and stderr apart, then put the other stream's lines
    between them: a progress line ran into the summary that followed it."""
    stream = sys.stderr if stream is None else stream
    stream.write(line + "\n")
    stream.flush()


class UsageError(Exception):
    """Bad input from the user: printed as one line on rank 0, every rank exits EXIT_USAGE."""


class RemoteError(Exception):
    """Stands in for an exception of another process (a task on a worker rank or in an isolated
    child) that could not travel back as itself: it did not pickle or unpickle."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in another process: the __cause__ of the error
    re-raised here, so the standard traceback display shows both."""

    def __str__(self) -> str:
        return self.args[0]


class Described(NamedTuple):
    """An exception as text that can travel and be stored: its type name, message, traceback."""

    type: str
    message: str
    traceback: str

    @property
    def line(self) -> str:
        """'Type: message' on one line (just 'Type' when there is no message): how a user is
        told of an exception in one line, with the bare type name the results file stores."""
        message = " ".join(self.message.split())
        return f"{self.type}: {message}" if message else self.type


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from its first frame outside mtcmpi: the user's frames, not mtcmpi's own
    call of the user's code."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR):
        tb = tb.tb_next
    return tb


def describe(exc: BaseException, head: str = "", traceback: bool = True) -> Described:
    """exc as text, its traceback trimmed to the user's frames and prefixed with head (with
    traceback=False, none: for a one-line message). Never raises: an exception whose __str__,
    __repr__ or traceback formatting fails is still described, with the failure said in its place."""
    name = safely(lambda: type(exc).__name__, "<unnamed exception>")
    message = safely(lambda: str(exc), "<exception str() failed>")   # Python's own words for it
    described = Described(name, message, "")
    if not traceback:
        return described
    import traceback as tb   # here: a run without failures never needs it (start-up, startup.py)

    text = safely(lambda: "".join(tb.format_exception(type(exc), exc, user_frames(exc.__traceback__))),
                  f"{described.line}\n(its traceback could not be formatted)\n")
    return described._replace(traceback=head + text)


def exception_line(exc: BaseException) -> str:
    """'Type: message' of exc on one line, even when its __str__ raises: Described.line."""
    return describe(exc, traceback=False).line


def safely(text: Callable[[], str], fallback: str) -> str:
    """text() if it returns a str without raising anything, else fallback."""
    try:
        value = text()
        return value if isinstance(value, str) else fallback
    except BaseException:   # noqa: BLE001 - describing an error must not raise one
        return fallback


def pickled_or_none(exc: BaseException) -> bytes | None:
    """exc pickled, or None if it does not pickle (it then travels as its description only)."""
    import pickle

    try:
        return pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:   # noqa: BLE001 - a __reduce__ may raise anything, SystemExit included
        return None


def rebuilt(described: Described, blob: bytes | None) -> BaseException:
    """The exception to raise here for one raised in another process: itself if blob unpickles
    to an exception, else a RemoteError saying its type and message; either way with the remote
    traceback as __cause__, so the standard display shows both."""
    import pickle

    try:
        exc = pickle.loads(blob) if blob is not None else None
    except BaseException:   # noqa: BLE001 - an exception that does not unpickle stands in as text
        exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(described.line)
    exc.__cause__ = RemoteTraceback(described.traceback)
    return exc
