"""mtcmpi.futures: the Executor suite (tests/mpi/test_executor_mpi.py, the same tests that run
under mpiexec) on one rank, in-process; and what only a single process can check: the driver
of `mtcmpi exec` in-process and under `mpiexec -n 2` and `-n 4` (subprocesses with timeouts),
and mtcmpi.map without mpi4py."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from mtcmpi.driver import run_script
from tests.helpers import ROOT
from _mpirun import mpirun  # noqa: E402,I001 - put on sys.path by tests.helpers
from tests.mpi.test_executor_mpi import *  # noqa: F401,F403 - the one Executor suite, on 1 rank

pytestmark = pytest.mark.timeout(60)


def test_parallel_map_without_mpi4py_runs_the_loop():
    code = ("import sys; sys.modules['mpi4py'] = None; from mtcmpi.futures import parallel_map; "
            "print(parallel_map(abs, [-1, 2, -3]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.stdout.strip() == "[1, 2, 3]", proc.stderr


DRIVER = '''
import sys
from mpi4py import MPI
import mtcmpi.futures as mx


class Point:                          # defined in the script: results travel back as it
    def __init__(self, rank):
        self.rank = rank


def where(x):
    return Point(MPI.COMM_WORLD.rank)


if __name__ == "__main__":
    mode = sys.argv[1]
    with mx.Executor() as ex:
        ranks = {p.rank for p in ex.map(where, range(40))}
        print("argv", sys.argv[1:], "ranks", sorted(ranks), flush=True)
    print("map", len(mx.parallel_map(where, range(7))), flush=True)
    if mode == "raise":
        mx.Executor().submit(where, 0)   # left running: run_script must still end it
        raise KeyError("the driver failed")
    if mode == "exit":
        sys.exit(5)
'''


def test_run_script_in_process_gives_the_exit_status(tmp_path, capfd):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    main = sys.modules["__main__"]
    assert run_script(str(script), ["ok", "x"]) == 0
    out = capfd.readouterr().out
    assert "argv ['ok', 'x'] ranks [0]" in out and "map 7" in out
    assert run_script(str(script), ["exit"]) == 5
    assert run_script(str(script), ["raise"]) == 1
    err = capfd.readouterr().err
    assert "KeyError: 'the driver failed'" in err and 'driver.py", line' in err
    assert os.path.join("mtcmpi", "driver.py") not in err   # the script's frames only
    assert sys.modules["__main__"] is main


RUN = ("import sys; from mpi4py import MPI; from mtcmpi.driver import run_script; "
       "s = run_script(sys.argv[1], sys.argv[2:]); "
       "print(f'rank {MPI.COMM_WORLD.rank} exits {s}', flush=True); sys.exit(s)")


def mpiexec_script(ranks: int, script, *args: str) -> subprocess.CompletedProcess:
    """`mpiexec -n ranks python -c RUN script args`: what `mtcmpi exec` does, as a subprocess
    (started the one shared way, with a timeout)."""
    return mpirun(ranks, ["-c", RUN, str(script), *args], timeout=60, check=False)


def exits(proc: subprocess.CompletedProcess) -> list[tuple[int, int]]:
    """(rank, exit status) as each rank printed it (mpiexec may interleave the lines)."""
    return sorted((int(r), int(s)) for r, s in re.findall(r"rank (\d+) exits (\d+)", proc.stdout))


@pytest.mark.e2e
@pytest.mark.parametrize("ranks", [2, 4])
def test_run_script_under_mpiexec(tmp_path, ranks):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = mpiexec_script(ranks, script, "ok")
    assert proc.returncode == 0, proc.stderr
    assert f"ranks {list(range(1, ranks))}" in proc.stdout and "map 7" in proc.stdout
    assert exits(proc) == [(r, 0) for r in range(ranks)]


@pytest.mark.e2e
@pytest.mark.parametrize("ranks", [2, 4])
@pytest.mark.parametrize("mode, status", [("raise", 1), ("exit", 5)])
def test_a_failing_driver_ends_every_rank_with_its_status(tmp_path, ranks, mode, status):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    t0 = time.monotonic()
    proc = mpiexec_script(ranks, script, mode)
    assert proc.returncode == status
    assert exits(proc) == [(r, status) for r in range(ranks)]
    assert (mode == "raise") == ("KeyError: 'the driver failed'" in proc.stderr)
    assert time.monotonic() - t0 < 30


@pytest.mark.e2e
def test_a_missing_script_is_one_error_on_every_rank(tmp_path):
    proc = mpiexec_script(2, tmp_path / "nope.py")
    assert proc.returncode != 0
    assert "no such script" in proc.stderr
