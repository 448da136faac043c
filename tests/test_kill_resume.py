"""Kill the job, one rank, or stop it with SIGTERM at given moments, resume, and lose nothing
(a few trials; the benchmark scaling/faults.py runs 20 at random moments)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scaling"))
from faults import trial  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.mark.parametrize("kill_after, kind", [(1.0, "kill"), (2.2, "kill"), (3.0, "kill"),
                                              (2.5, "rank"), (2.5, "term")])
def test_fault_then_resume_loses_nothing_and_repeats_nothing_stored(tmp_path, kill_after, kind):
    r = trial(ranks=3, n=150, kill_after=kill_after, workdir=str(tmp_path), kind=kind)
    assert r["lost"] == 0
    assert r["doubled"] == 0
