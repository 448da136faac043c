"""Start-up: the profile a user can print, the cheap same-code check and the import broadcast."""
from __future__ import annotations

import math
import sys

import h5py
import pytest

from mtcmpi import startup
from tests.helpers import mtcmpi

pytestmark = pytest.mark.timeout(120)


def from_memory(i: int) -> int:
    """A task: 1 if this rank imported this module from rank 0's broadcast, else 0."""
    return int(startup.loaded_from_memory(sys.modules[__name__]))


def test_phases_add_up_to_launch_until_the_first_task(monkeypatch):
    """The phases cover the timeline without gaps or overlaps, with MPI init apart."""
    marks = {"python": 10.0, "mpi_start": 10.5, "mpi_end": 11.0, "resolved": 11.25,
             "same_code": 11.5, "tasks": 12.0, "results_file": 12.5}
    monkeypatch.setattr(startup, "_marks", marks)
    monkeypatch.setattr(startup, "process_start", lambda: 9.0)
    got = startup.phases(launched=8.0, ready=13.0, first_task=14.0)
    assert got == [1.0, 1.0, 0.75, 0.5, 0.25, 0.5, 0.5, 0.5, 1.0]
    assert sum(got) == 14.0 - 8.0
    assert math.isnan(startup.phases(8.0, 13.0, None)[-1])   # a master runs no task


def test_summary_is_median_and_max_over_the_ranks_that_have_the_phase():
    nan = float("nan")
    per_rank = [[0.0] * 8 + [nan], [1.0] * 8 + [2.0], [3.0] * 8 + [4.0]]
    got = startup.summarise(per_rank)
    assert got["python"] == (1.0, 3.0) and got["first_task"] == (4.0, 4.0)
    assert startup.attributes(got)["startup_python_max"] == 3.0


@pytest.mark.e2e
def test_profile_startup_prints_every_phase_and_the_file_keeps_it(tmp_path):
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", "kernels.sleep:task", "--count", "4", "--quiet", "--profile-startup",
                   "--out", str(out)], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert "start-up on 2 ranks (seconds, median / max over ranks):" in proc.stdout
    for name, _ in startup.PHASES:
        assert f"    {name} " in proc.stdout, name
    with h5py.File(out) as f:
        assert 0 < f.attrs["startup_mpi_init_max"] < 60 and "startup_first_task_median" in f.attrs


@pytest.mark.e2e
@pytest.mark.parametrize("broadcast", [False, True])
def test_import_broadcast_serves_the_task_module_from_memory_to_the_other_ranks(tmp_path, broadcast):
    """Static, so rank 0 works too: it read the module itself, rank 1 from memory only with
    --import-broadcast; the same-code check passes either way."""
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", "tests.test_startup:from_memory", "--count", "4", "--schedule", "static",
                   "--quiet", "--out", str(out)] + (["--import-broadcast"] if broadcast else []), ranks=2)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out) as f:
        by_rank = dict(zip(f["tasks"]["rank"].tolist(), f["results"]["value"][:].tolist()))
    assert by_rank == {0: 0, 1: int(broadcast)}
