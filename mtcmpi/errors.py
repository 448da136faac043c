"""The errors mtcmpi tells users about, the exit codes every rank leaves with, and how an
exception from another process is described and stands in for itself."""
from __future__ import annotations

import os
from types import TracebackType
from typing import Callable, NamedTuple

EXIT_OK = 0             # every task succeeded
EXIT_TASKS_FAILED = 1   # the run finished, some tasks failed (the summary says which and why)
EXIT_USAGE = 2          # bad input: target, params file, options (one line on rank 0 says what)
EXIT_INTERNAL = 3       # an unexpected error inside mtcmpi; the job was aborted
EXIT_STOPPED = 75       # stopped early by a signal or the walltime: run the same command to resume
                        # (75 is EX_TEMPFAIL in sysexits.h: "try again later")

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


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


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from its first frame outside mtcmpi: the user's frames, not mtcmpi's own
    call of the user's code."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR):
        tb = tb.tb_next
    return tb


def describe(exc: BaseException, head: str = "") -> Described:
    """exc as text, its traceback trimmed to the user's frames and prefixed with head. Never
    raises: an exception whose __str__, __repr__ or traceback formatting fails is still
    described, with the failure said in its place."""
    import traceback   # here: a run without failures never needs it (start-up, startup.py)

    name = safely(lambda: type(exc).__name__, "<unnamed exception>")
    message = safely(lambda: str(exc), f"<{name}: str() failed>")
    text = safely(lambda: "".join(traceback.format_exception(type(exc), exc, user_frames(exc.__traceback__))),
                  f"{name}: {message}\n(its traceback could not be formatted)\n")
    return Described(name, message, head + text)


def safely(text: Callable[[], str], fallback: str) -> str:
    """text() if it returns a str without raising anything, else fallback."""
    try:
        value = text()
        return value if isinstance(value, str) else fallback
    except BaseException:   # noqa: BLE001 - describing an error must not raise one
        return fallback


def exception_line(exc: BaseException) -> str:
    """'Type: message' of an exception, even one whose __str__ raises."""
    import traceback

    return traceback.format_exception_only(type(exc), exc)[-1].strip()
