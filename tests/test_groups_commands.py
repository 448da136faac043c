"""MPI programs as command tasks of k ranks: {mpirun}, {np}, {hosts}, {hostfile} under mpiexec
(at most 4 ranks), with a C program compiled by mpicc and an mpi4py script."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import h5py
import pytest

from mtcmpi.groups import clean_environment, expand, slots
from tests.helpers import mtcmpi

pytestmark = pytest.mark.timeout(180)

HELLO_C = r"""
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int rank, size, sum, one = 1;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("input %s ranks %d sum %d\n", argv[1], size, sum);
    MPI_Finalize();
    return argc > 2 ? atoi(argv[2]) : 0;
}
"""
HELLO_PY = """
import sys
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.rank)
if comm.rank == 0:
    print(f"input {sys.argv[1]} ranks {comm.size} total {total}")
"""


def test_group_placeholders_expand_to_hosts_and_slots():
    hosts = ["a", "a", "b"]
    assert slots(hosts) == [("a", 2), ("b", 1)]
    line = expand("{mpirun} ./x {np} {hosts} {hostfile}", hosts, "/tmp/h")
    assert line.endswith("./x 3 a,b /tmp/h") and "-n 3" in line and "a:2,b:1" in line


def test_the_enclosing_jobs_mpi_identity_is_removed(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("PMIX_RANK", "3")
    monkeypatch.setenv("PMI_FD", "7")
    monkeypatch.setenv("HYDRA_CONTROL_FD", "8")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env = clean_environment()
    assert not {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_FD", "HYDRA_CONTROL_FD"} & set(env)
    assert env["OMPI_ALLOW_RUN_AS_ROOT"] == "1"


@pytest.fixture(scope="module")
def hello(tmp_path_factory) -> str:
    if not shutil.which("mpicc"):
        pytest.fail("mpicc is not installed (apt-get install libopenmpi-dev)")
    path = tmp_path_factory.mktemp("c") / "hello"
    source = path.with_suffix(".c")
    source.write_text(HELLO_C)
    subprocess.run(["mpicc", "-o", str(path), str(source)], check=True, timeout=120)
    return str(path)


def inputs(tmp_path, n: int) -> str:
    args = tmp_path / "args.txt"
    args.write_text("".join(f"in{i}\n" for i in range(n)))
    return str(args)


def test_c_and_mpi4py_programs_run_on_exactly_their_ranks(tmp_path, hello):
    out = tmp_path / "c.h5"
    proc = mtcmpi(["run", "--command", f"{{mpirun}} {hello} {{}}", "--args", inputs(tmp_path, 3),
                   "--ranks-per-task", "2", "--out", str(out)], ranks=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(out) as f:
        assert [s.decode() for s in f["results/stdout"][:]] == [f"input in{i} ranks 2 sum 2" for i in range(3)]
        assert (f["tasks"]["ranks"][:] == 2).all()
    script = tmp_path / "hello.py"
    script.write_text(HELLO_PY)
    py = tmp_path / "py.h5"
    proc = mtcmpi(["run", "--command", f"{{mpirun}} {shlex.quote(sys.executable)} {script} {{}}",
                   "--args", inputs(tmp_path, 2), "--ranks-per-task", "3", "--out", str(py)], ranks=4)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(py) as f:
        assert [s.decode() for s in f["results/stdout"][:]] == [f"input in{i} ranks 3 total 3" for i in range(2)]


def test_exit_status_not_found_and_timeout_decide_the_task(tmp_path, hello):
    marker = "417.25"   # a sleep no other process runs, to find leftovers
    tasks = tmp_path / "tasks.txt"
    tasks.write_text(f"{{mpirun}} {hello} a 3\n{{mpirun}} ./no-such-program\n"
                     f"{{mpirun}} sleep {marker}\n{{mpirun}} {hello} ok\n")
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", "--taskfile", str(tasks), "--ranks-per-task", "2", "--timeout", "3",
                   "--out", str(out)], ranks=3, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    with h5py.File(out) as f:
        status = list(f["tasks"]["status"][:])
        messages = f["errors/message"].asstr()[:]
    assert status == [2, 2, 4, 1], messages
    assert "no-such-program" in messages[1] + f"{messages}"
    left = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert not left.stdout.strip(), "the timed-out program survived on some host"


def test_mpirun_on_one_rank_needs_no_size(tmp_path, hello):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text(f"{{mpirun}} {hello} t{{np}}\n")   # a task file line: a whole command
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", "--taskfile", str(tasks), "--out", str(out)], ranks=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(out) as f:
        assert f["results/stdout"][0].decode() == "input t1 ranks 1 sum 1"
