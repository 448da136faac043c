"""What every test shares: the kill delay of the MPI jobs tests start, and, when pytest-xdist
runs the suite side by side (scripts/test, `-n N`), tests marked `alone` (they time themselves)
each run with no other test beside it."""
from __future__ import annotations

import fcntl
import os

import pytest

# Open MPI's mpiexec, when a rank exits non-zero (every bad-input test, every run with a failed
# task) or is signalled, sleeps this delay twice, even once every rank has exited: scripts/mpienv's
# 5 s made each such run take 10 s. 2 s still leaves a signalled run 4 s to stop and store; the
# tests of that delay itself set theirs (test_stopping.py reads scripts/mpienv's).
KILL_DELAY = "2"


def pytest_configure(config: pytest.Config) -> None:
    """The MPI jobs the tests start (they inherit this environment) get KILL_DELAY."""
    os.environ["OMPI_MCA_odls_base_sigkill_timeout"] = KILL_DELAY


def lock_files(config: pytest.Config) -> tuple[str, str] | None:
    """(gate, running): files the xdist workers of one run share; None outside xdist."""
    if not hasattr(config, "workerinput") or not config.option.basetemp:
        return None
    run = os.path.dirname(os.path.abspath(config.option.basetemp))   # <basetemp>/popen-gwN
    return os.path.join(run, "tests.gate"), os.path.join(run, "tests.running")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Each test holds `running` shared, an `alone` test exclusive (setup to teardown, outside
    the test's timeout). A test first passes the `gate`, which an `alone` test keeps closed while
    it waits, so the tests that keep starting beside it cannot make it wait for ever."""
    files = lock_files(item.config)
    if files is None:
        yield
        return
    alone = item.get_closest_marker("alone") is not None
    with open(files[0], "a") as gate, open(files[1], "a") as running:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        fcntl.flock(running, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(gate, fcntl.LOCK_UN)
        yield
