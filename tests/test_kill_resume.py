"""Kill the job, one rank, or stop it with SIGTERM at given moments, resume, and lose nothing
(a few trials; the benchmark scaling/faults.py runs 20 at random moments)."""
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scaling"))
from faults import trial  # noqa: E402

from mtcmpi.output import direct, journal  # noqa: E402
from tests.helpers import end_job, mtcmpi, start  # noqa: E402
from tests.output_tasks import rows  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.mark.parametrize("kill_after, kind", [(1.0, "kill"), (2.2, "kill"), (3.0, "kill"),
                                              (2.5, "rank"), (2.5, "term")])
def test_fault_then_resume_loses_nothing_and_repeats_nothing_stored(tmp_path, kill_after, kind):
    r = trial(ranks=3, n=150, kill_after=kill_after, workdir=str(tmp_path), kind=kind)
    assert r["lost"] == 0
    assert r["doubled"] == 0


def journalled(out: str) -> int:
    """Tasks in the journal of out so far."""
    return sum(len(f.ids) for f in journal.read(out)) if os.path.isdir(journal.directory(out)) else 0


def test_kill_while_rows_go_into_the_file_then_resume(tmp_path):
    """kill -9 of the whole job while ranks write rows into results.h5.tmp: the same command
    resumes from it, runs only what was not journalled, and every row is right."""
    out, n = str(tmp_path / "r.h5"), 120
    args = ["run", "tests.output_tasks:slow_rows", "--count", str(n), "--out", out, "--quiet",
            "--flush-interval", "0.1"]
    job = start(3, ["-m", "mtcmpi", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not journalled(out):
        time.sleep(0.05)
    end_job(job.pid)   # every rank gone (MPICH's are in sessions of their own) before the journal is read
    job.wait(timeout=30)
    kept = journalled(out)
    assert 0 < kept < n and os.path.exists(direct.tmp_path(out))
    again = mtcmpi(args, ranks=3, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f": {n - kept} ok" in again.stdout
    with h5py.File(out) as f:
        assert (f["tasks"]["status"][:] == 1).all()
        assert np.array_equal(f["results/value"][:], np.stack([rows(i) for i in range(n)]))
