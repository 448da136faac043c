"""SIGKILL the whole job at random moments, resume, and lose nothing (a few trials; the
benchmark scaling/faults.py runs 20)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scaling"))
from faults import trial  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.mark.parametrize("kill_after", [1.0, 2.2, 3.0])
def test_kill_then_resume_loses_nothing_and_repeats_nothing_journalled(tmp_path, kill_after):
    r = trial(ranks=3, n=150, kill_after=kill_after, workdir=str(tmp_path))
    assert r["lost"] == 0
    assert r["doubled"] == 0
