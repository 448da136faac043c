"""The MPI layer under the Executor and the engine: describe() of any exception (never raises),
the one backoff and its MTCMPI_BACKOFF override."""
from __future__ import annotations

import time

import pytest

from mtcmpi import world
from mtcmpi.errors import describe
from mtcmpi.tasklog import TaskLog
from tests.mpi.test_executor_mpi import Nasty


def test_describe_trims_mtcmpi_frames_and_heads_the_traceback():
    def user():
        raise ValueError("bad x")
    try:
        user()
    except ValueError as exc:
        described = describe(exc, "task 3 failed on rank 1:\n")
    assert described.type == "ValueError" and described.message == "bad x"
    assert described.traceback.startswith("task 3 failed on rank 1:\nTraceback")
    assert "in user" in described.traceback and described.traceback.endswith("ValueError: bad x\n")


def test_describe_never_raises_whatever_the_exception_does():
    try:
        raise Nasty()
    except Nasty as caught:
        exc = caught
    described = describe(exc, "head\n")
    assert described.type == "Nasty"
    assert described.message == "<exception str() failed>"
    assert described.traceback.startswith("head\nNasty") and "could not be formatted" in described.traceback
    assert TaskLog(0, "h", 1).failure(7, exc).type == "Nasty"   # the engine's failures too


def test_backoff_doubles_to_its_cap_and_starts_again_after_reset():
    backoff = world.Backoff(1e-4)
    pauses = [backoff.next() for _ in range(6)]
    assert pauses == [1e-5, 2e-5, 4e-5, 8e-5, 1e-4, 1e-4]
    backoff.reset()
    assert backoff.next() == 1e-5


@pytest.mark.parametrize("value, cap", [("0.002", 0.002), ("0", 0.0), ("soon", 0.01), ("-1", 0.01)])
def test_mtcmpi_backoff_overrides_every_cap(monkeypatch, value, cap):
    monkeypatch.setenv(world.BACKOFF_ENV, value)
    world.longest_pause.cache_clear()
    try:
        if cap == 0.01:
            with pytest.warns(UserWarning, match="MTCMPI_BACKOFF"):
                assert world.Backoff(0.01).cap == cap
        else:
            assert world.Backoff(0.01).cap == cap
    finally:
        world.longest_pause.cache_clear()


def test_poll_until_returns_what_the_probe_found():
    end = time.monotonic() + 0.02
    assert world.poll_until(lambda: "here" if time.monotonic() > end else None, 1e-3) == "here"
