"""errors.py: the one-line form of any exception, and an exception from another process standing
in for itself (or as a RemoteError) with its remote traceback."""
import pickle

import pytest

from mtcmpi.errors import RemoteError, RemoteTraceback, describe, exception_line, pickled_or_none, rebuilt


class Unprintable(Exception):
    def __str__(self):
        raise KeyboardInterrupt("str")


class Local(Exception):
    """Defined here: it pickles by reference to this test module."""


@pytest.mark.parametrize("exc, line", [
    (ValueError("bad x"), "ValueError: bad x"),
    (SystemExit(), "SystemExit"),                                    # no message: the type alone
    (SystemExit("no licence"), "SystemExit: no licence"),
    (KeyError("k"), "KeyError: 'k'"),                                # as Python shows it
    (RuntimeError("first\n  second\n"), "RuntimeError: first second"),   # one line, always
    (Unprintable(), "Unprintable: <exception str() failed>"),        # never raises
    (Local("here"), "Local: here"),                                  # the bare type name
])
def test_exception_line_is_one_line_naming_type_and_message(exc, line):
    assert exception_line(exc) == line == describe(exc, traceback=False).line
    assert describe(exc, traceback=False).traceback == ""


def test_rebuilt_is_the_exception_itself_when_it_unpickles():
    try:
        raise Local("boom")
    except Local as exc:
        described, blob = describe(exc, "rank 3:\n"), pickled_or_none(exc)
    back = rebuilt(described, blob)
    assert type(back) is Local and str(back) == "boom"
    assert isinstance(back.__cause__, RemoteTraceback)
    assert str(back.__cause__).startswith("rank 3:\nTraceback") and "Local: boom" in str(back.__cause__)


def test_rebuilt_stands_in_with_a_remote_error_when_it_does_not():
    class Unpicklable(Exception):   # local: it does not pickle
        pass
    exc = Unpicklable("lost in transit")
    assert pickled_or_none(exc) is None
    back = rebuilt(describe(exc), None)
    assert type(back) is RemoteError and str(back) == "Unpicklable: lost in transit"
    garbage = rebuilt(describe(exc), pickle.dumps("not an exception"))
    assert type(garbage) is RemoteError


def test_say_writes_its_line_in_one_write():
    """Unbuffered (PYTHONUNBUFFERED), print() writes a line's text and newline apart, and
    mpiexec could put the other stream's output between them."""
    from mtcmpi.errors import say

    class Recorder:
        def __init__(self):
            self.writes, self.flushed = [], 0

        def write(self, text):
            self.writes.append(text)

        def flush(self):
            self.flushed += 1

    stream = Recorder()
    say("mtcmpi: 3/3 done", stream)
    assert stream.writes == ["mtcmpi: 3/3 done\n"] and stream.flushed == 1
