"""The results file written collectively by several ranks (under mpiexec -n 2 and -n 4)."""
import os

import h5py
import numpy as np
import pytest
from mtcmpi.job import run_job
from mtcmpi.options import RunOptions
from mtcmpi.tasks import CountSource
from mtcmpi.world import World
from tests.mpi.common import comm, on_rank0, shared_tmp

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(120)]


def contents(path):
    with h5py.File(path, "r") as f:
        return {k: f[f"results/{k}"][:] for k in f["results"]}, f["tasks"]["status"][:], f["tasks"]["rank"][:]


@pytest.mark.parametrize("n", [0, 1, 3, 50])
def test_static_and_dynamic_write_the_same_results(tmp_path_factory, n):
    base = shared_tmp(tmp_path_factory, "store")
    files = {}
    for schedule in ("static", "dynamic", "guided"):
        path = os.path.join(base, f"{schedule}.h5")
        outcome = run_job(World.of(), "tests.tasks_for_tests:vector", CountSource(n),
                          RunOptions(schedule=schedule, out=path))
        assert outcome.exit_code == 0
        files[schedule] = path

    def check():
        results = [contents(p) for p in files.values()]
        for values, status, ranks in results:
            assert status.tolist() == [1] * n
            if n:
                assert np.array_equal(values["value"][:, 1], np.arange(n, dtype=float))
        static_ranks, dynamic_ranks = results[0][2], results[1][2]
        assert set(static_ranks.tolist()) <= set(range(comm.size))
        assert 0 not in dynamic_ranks.tolist()   # the master runs no task
    on_rank0(check)


def test_failures_from_every_rank_reach_the_file(tmp_path_factory):
    path = os.path.join(shared_tmp(tmp_path_factory, "store"), "f.h5")
    outcome = run_job(World.of(), "tests.tasks_for_tests:maybe_fail", CountSource(40),
                      RunOptions(schedule="static:cyclic", out=path))
    assert outcome.exit_code == 1

    def check():
        with h5py.File(path) as f:
            failed = np.flatnonzero(f["tasks"]["status"][:] == 2)
            assert failed.tolist() == [3, 8, 13, 18, 23, 28, 33, 38]
            assert all("unlucky" in m for m in f["errors/message"].asstr()[failed])
            assert set(f["tasks"]["rank"][failed].tolist()) == {i % comm.size for i in failed}
    on_rank0(check)


def test_serial_io_writes_the_same_file(tmp_path_factory):
    path = os.path.join(shared_tmp(tmp_path_factory, "store"), "s.h5")
    run_job(World.of(), "tests.tasks_for_tests:square", CountSource(30), RunOptions(out=path, serial_io=True))

    def check():
        with h5py.File(path) as f:
            assert f.attrs["io_mode"] == "serial"
            assert f["results/value"][:].tolist() == [x * x for x in range(30)]
    on_rank0(check)


@pytest.mark.parametrize("schedule", ["static:cyclic", "dynamic"])
def test_rows_written_during_the_run_by_every_rank(tmp_path_factory, schedule):
    """Array results go straight into the file from every rank, whatever the schedule."""
    from tests.output_tasks import rows
    path = os.path.join(shared_tmp(tmp_path_factory, "direct"), f"{schedule}.h5")
    outcome = run_job(World.of(), "tests.output_tasks:rows", CountSource(64),
                      RunOptions(schedule=schedule, out=path, flush_interval=0.01))
    assert outcome.exit_code == 0

    def check():
        with h5py.File(path) as f:
            assert f["results/value"].chunks is None   # contiguous: written during the run
            assert np.array_equal(f["results/value"][:], np.stack([rows(i) for i in range(64)]))
    on_rank0(check)


def test_a_rank_that_fails_in_a_collective_write_stops_every_rank(tmp_path_factory):
    """Compressed rows are written collectively: a rank whose part cannot be read or written
    makes every rank raise at the next agreement instead of leaving them in a collective call."""
    from mtcmpi.output.hdf5 import PeerFailed, Writer
    path = os.path.join(shared_tmp(tmp_path_factory, "agree"), "c.h5")
    writer = Writer(comm, collective=True, parallel=True)

    def load():
        if comm.rank == 1:
            raise OSError(28, "No space left on device")
        return np.ones((10, 4))

    with h5py.File(path, "w", driver="mpio", comm=comm) as f:
        ds = f.create_dataset("v", (10 * comm.size, 4), dtype=np.float64, chunks=(10, 4), compression="gzip")
        ids = np.arange(10 * comm.rank, 10 * comm.rank + 10)
        with pytest.raises(OSError) as raised:
            writer.stream(ds, lambda: iter([(ids, load)]))
    assert isinstance(raised.value, PeerFailed) == (comm.rank != 1)


def test_writers_by_node_are_the_first_rank_of_each_node_group(tmp_path_factory):
    """The split a job on several hosts takes (a one-host job skips it: rank 0 writes alone):
    on this one machine, one group of every rank, whose first rank is the only writer."""
    from mtcmpi.output import Output

    world = World.of()
    output = Output(os.path.join(shared_tmp(tmp_path_factory, "writers"), "r.h5"))
    for one_node in (True, False):
        group, writers = output.writers(world, one_node)
        assert group.Get_size() == world.size and (writers is not None) == (world.rank == 0)
        if writers is not None:
            assert writers.Get_size() == 1
