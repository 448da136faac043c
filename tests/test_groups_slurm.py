"""Parallel tasks on a real multi-node Slurm: MTCMPI_SLURM_NODES=4 scripts/slurm-up brings up
nodes n1..n4 (one slurmd each) on this machine; a job over three of them runs command tasks
whose {mpirun} becomes an srun job step, and Python functions on their own communicators.
Submits for real, so it runs only with MTCMPI_BATCH_TESTS=1 (as tests/test_batch_real.py):

    MTCMPI_SLURM_NODES=4 scripts/slurm-up
    MTCMPI_BATCH_TESTS=1 .venv/bin/python -m pytest -q tests/test_groups_slurm.py
"""
from __future__ import annotations

import os
import subprocess
import sys

import h5py
import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.skipif(os.environ.get("MTCMPI_BATCH_TESTS") != "1",
                                 reason="submits to a real Slurm: see the module docstring"),
              pytest.mark.timeout(300)]

# Open MPI's shared-memory transport crashes between "nodes" that are one machine (their
# segments collide); on a real cluster no setting is needed.
JOB = """#!/bin/bash
#SBATCH -N 3 -n 6 --ntasks-per-node=2 -t 5 -o {dir}/job.log
export OMPI_MCA_btl=self,tcp OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PYTHONPATH={root}
cd {dir}
mtcmpi() {{ mpirun -n 5 {py} -m mtcmpi run "$@" --quiet; echo "exit $?"; }}
mtcmpi --command '{{mpirun}} sh -c "echo \\$SLURMD_NODENAME step \\$SLURM_STEP_ID"' --args args.txt \\
    --ranks-per-task 2 --timeout 60 --out cmd.h5
mtcmpi tests.tasks_for_groups:where --count 4 --ranks-per-task 2 --out fn.h5
"""


def nodes() -> list[str]:
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.split()[1] in ("idle", "mixed")]


def test_groups_land_on_their_nodes_and_mpirun_is_a_job_step(tmp_path):
    if len(nodes()) < 3:
        pytest.fail(f"Slurm has idle nodes {nodes()}: run MTCMPI_SLURM_NODES=4 scripts/slurm-up")
    (tmp_path / "args.txt").write_text("a\nb\nc\n")
    job = tmp_path / "job.sh"
    job.write_text(JOB.format(dir=tmp_path, root=ROOT, py=sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "PMIX_"))}
    subprocess.run(["sbatch", "--wait", str(job)], check=True, timeout=280, env=env, capture_output=True)
    log = (tmp_path / "job.log").read_text()
    assert log.count("exit 0") == 2, log
    with h5py.File(tmp_path / "cmd.h5") as f:
        stdout = [s.decode() for s in f["results/stdout"][:]]
        groups = {int(t): (m.decode(), h.decode()) for t, m, h in f["groups"][:]}
    # mpirun puts ranks 0-1 on n1, 2-3 on n2, 4 on n3; rank 0 packs. A group takes one node's
    # two ranks when it can (2-3 on n2), else two nodes (1 on n1, 4 on n3).
    assert set(groups.values()) == {("2-3", "n2,n2"), ("1,4", "n1,n3")}, groups
    for tid, (_, hosts) in groups.items():
        lines = stdout[tid].splitlines()
        assert sorted(line.split()[0] for line in lines) == sorted(hosts.split(",")), (tid, lines)
        assert len({line.split()[2] for line in lines}) == 1   # one job step, its own id
    with h5py.File(tmp_path / "fn.h5") as f:
        hosts = {h.decode() for _, _, h in f["groups"][:]}
        assert (f["tasks"]["status"][:] == 1).all() and hosts <= {"n2,n2", "n1,n3"}, hosts
