"""A full disk and a read-only one, for real: a small tmpfs mounted for each test (root only).
While the journal or the results file is written, or when the output directory cannot be
written: one line, exit 2 on every rank, no hang; once there is space the same command
resumes and nothing is lost."""
import os
import subprocess

import h5py
import numpy as np
import pytest

from tests import output_tasks
from tests.helpers import mtcmpi

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def mount(where: str, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", where], check=True, timeout=30)


@pytest.fixture
def disk(tmp_path):
    """An 8 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    where = str(tmp_path / "disk")
    os.mkdir(where)
    mount(where, "size=8m")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], timeout=30)


def remount(where: str, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", where], check=True, timeout=30)


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The run's only message (mpiexec adds its own lines about the exit status)."""
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mtcmpi")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def check_complete(out: str, fn, n: int) -> None:
    with h5py.File(out) as f:
        assert (f["tasks"]["status"][:] == 1).all()
        values = f["results/value"][:]
    assert np.array_equal(values, np.stack([fn(i) for i in range(n)]))


def frames_kept(out: str) -> int:
    from mtcmpi.output import journal
    return sum(len(frame.ids) for frame in journal.read(out))


@pytest.mark.parametrize("task, n", [("rows", 2500), ("small_rows", 40000)])
def test_a_disk_that_fills_during_the_run(disk, task, n):
    """Rows straight into the results file (8 KiB) or into the journal (384 bytes)."""
    out = os.path.join(disk, "r.h5")
    args = ["run", f"tests.output_tasks:{task}", "--count", str(n), "--out", out, "--quiet",
            "--flush-interval", "0.05"]
    first = mtcmpi(args, ranks=2, timeout=120)
    assert first.returncode == 2
    assert "No space left on device" in one_line(first) and "run the same command again" in one_line(first)
    kept = frames_kept(out)
    remount(disk, "size=64m")
    again = mtcmpi(args, ranks=2, timeout=120)
    assert again.returncode == 0, again.stderr
    # what was journalled ran once (none may be, when the first flush alone fills the disk)
    assert f": {n - kept} ok, 0 failed" in again.stdout
    check_complete(out, getattr(output_tasks, task), n)


@pytest.mark.parametrize("ranks, options", [(2, []), (3, ["--compression", "gzip:1", "--schedule", "static"]),
                                            (2, ["--serial-io"])])
def test_a_disk_that_fills_while_the_file_is_finished(disk, ranks, options):
    """Every result journalled fits; the file built from them does not (collectively, when
    compressed): one line and no hang, then the same command only finishes the file."""
    out = os.path.join(disk, "r.h5")
    n = 14000
    args = ["run", "tests.output_tasks:small_rows", "--count", str(n), "--out", out, "--quiet", *options]
    first = mtcmpi(args, ranks=ranks, timeout=120)
    assert first.returncode == 2
    line = one_line(first)
    assert "the results file cannot be written" in line and "nothing is lost" in line
    assert frames_kept(out) == n and not os.path.exists(out)
    remount(disk, "size=64m")
    again = mtcmpi(args, ranks=ranks, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "nothing to run" in again.stdout
    check_complete(out, output_tasks.small_rows, n)


def test_a_read_only_output_directory(disk):
    out = os.path.join(disk, "r.h5")
    args = ["run", "tests.output_tasks:rows", "--count", "20", "--out", out, "--quiet"]
    remount(disk, "ro")
    first = mtcmpi(args, ranks=2, timeout=60)
    assert first.returncode == 2 and "is not writable" in one_line(first)
    remount(disk, "rw")
    again = mtcmpi(args, ranks=2, timeout=60)
    assert again.returncode == 0, again.stderr
    check_complete(out, output_tasks.rows, 20)
