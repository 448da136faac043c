"""Results normalisation, the journal, the HDF5 layout and resume (one rank, in-process)."""
import os

import h5py
import numpy as np
import pytest

from mtcmpi.faults import Stop

from mtcmpi.output import journal, resume
from mtcmpi.errors import UsageError
from mtcmpi.job import run_job
from mtcmpi.options import RunOptions
from mtcmpi.output.values import Normalizer, Schema, UnstorableResult, fits
from mtcmpi.tasklog import FAILED, OK, TaskLog
from mtcmpi.tasks import CountSource, ItemsSource
from mtcmpi.world import World
from tests import tasks_for_tests as t

pytestmark = pytest.mark.timeout(60)


def test_normalizer_turns_values_into_arrays():
    norm = Normalizer()
    got = norm({"a": 1, "b": np.arange(3.0), "s": "é", "skip": None})
    assert set(got) == {"a", "b", "s"} and got["s"].item() == "é".encode()
    assert norm({"a": 2, "b": np.ones(3), "s": "longer"})["b"].shape == (3,)
    assert norm(None) is None
    assert Normalizer()(2.5)["value"] == 2.5


def test_normalizer_rejects_what_cannot_be_stored():
    with pytest.raises(UnstorableResult, match="returned a set, which cannot be stored"):
        Normalizer()({1, 2})
    with pytest.raises(UnstorableResult, match="under key 'x'"):
        Normalizer()({"x": object()})
    pickled = Normalizer(pickled=True)
    assert pickled({1, 2})["value"].dtype.kind == "S" and pickled.pickled_keys == {"value"}


def test_schema_rule_is_the_lowest_task_id_and_promotes_numbers():
    a, b = Schema(), Schema()
    a.add("v", np.dtype("<i8"), (), 5)
    b.add("v", np.dtype("<f8"), (), 2)
    b.add("v", np.dtype("<f8"), (3,), 0)          # task 0 returned another shape: it wins
    a.add("s", np.dtype("S3"), (), 1)
    b.add("s", np.dtype("S7"), (), 4)
    a.add("u", np.dtype("<u8"), (), 3)
    b.add("u", np.dtype("<i8"), (), 1)            # uint64 beside int64 is not float64
    a.merge(b)
    cols = a.columns()
    assert cols["v"].shape == (3,) and cols["v"].first == 0
    assert not fits(cols["v"], np.dtype("<i8"), ())
    assert cols["s"].dtype == np.dtype("S7")
    assert cols["u"].dtype == np.int64 and not fits(cols["u"], np.dtype("<u8"), ())


def test_journal_survives_a_torn_last_frame(tmp_path):
    out = str(tmp_path / "r.h5")
    os.makedirs(journal.directory(out))
    log = TaskLog(0, "host", 1)
    j = journal.Journal(out, log, "run", "fp")
    log.run([(0, 1), (1, 2)], Normalizer(), lambda: 1.0, Stop())
    j.flush()
    log.run([(2, 3)], Normalizer(), lambda: 2.0, Stop())
    j.flush()
    j.close()
    with open(j.path, "r+b") as f:          # cut the second frame short, as a kill would
        f.truncate(os.path.getsize(j.path) - 5)
    frames = list(journal.read(out, "fp"))
    assert len(frames) == 1 and list(frames[0].ids) == [0, 1] and not log.results
    assert frames[0].values(np.dtype(int), (), 2, next(frames[0].groups())[4]).tolist() == [1, 2]


def run(out, fn, items, **opts):
    return run_job(World.of(), fn, ItemsSource(items), RunOptions(out=str(out), **opts))


def test_file_layout(tmp_path):
    out = tmp_path / "r.h5"
    outcome = run(out, t.vector, range(5))
    assert outcome.exit_code == 0 and not os.path.exists(journal.directory(str(out)))
    with h5py.File(out) as f:
        assert f["results/value"].shape == (5, 3)
        assert np.array_equal(f["results/value"][:, 0], np.arange(5.0))
        assert list(f["tasks"]["status"][:]) == [OK] * 5
        assert f["tasks"]["rank"][0] == 0 and f["tasks"]["pid"][0] == os.getpid()
        assert (f["tasks"]["end"][:] >= f["tasks"]["start"][:]).all()
        for attr in ("mtcmpi_version", "mpi_library", "ranks", "policy", "command_line",
                     "start_time", "end_time", "fingerprint", "n_tasks", "io_mode"):
            assert attr in f.attrs
        assert f.attrs["io_mode"] == "collective" and f.attrs["n_tasks"] == 5


def test_failed_rows_hold_fill_values_and_the_error(tmp_path):
    out = tmp_path / "r.h5"
    assert run(out, t.maybe_fail, range(6)).exit_code == 1
    with h5py.File(out) as f:
        assert f["tasks"]["status"][3] == FAILED
        assert f["results/value"][3] == np.iinfo(np.int64).min
        assert f["errors/type"].asstr()[3] == "ValueError"
        assert "x=3 is unlucky" in f["errors/message"].asstr()[3]
        assert "Traceback" in f["errors/traceback"].asstr()[3]
        assert f["errors/type"].asstr()[2] == ""


def test_resume_skips_done_tasks_and_refuses_another_task_list(tmp_path):
    out = tmp_path / "r.h5"
    run(out, t.maybe_fail, range(6))
    with h5py.File(out) as f:
        fingerprint = f.attrs["fingerprint"]
    prior = resume.load(str(out), 6, fingerprint)
    assert list(prior.todo(retry_failed=False)) == [] and list(prior.todo(retry_failed=True)) == [3]
    again = run(out, t.maybe_fail, range(6), retry_failed=True)
    assert again.summary.earlier == 5 and again.summary.total.ran == 1
    with h5py.File(out) as f:
        assert f["tasks"]["attempts"][3] == 2 and f["tasks"]["attempts"][2] == 1
    with pytest.raises(UsageError, match="different task list"):
        run(out, t.maybe_fail, range(7))
    assert run(out, t.maybe_fail, range(7), restart=True).summary.total.ran == 7


def test_pickled_results_are_marked(tmp_path):
    out = tmp_path / "r.h5"
    run(out, lambda x: {x}, range(3), pickle_results=True)
    with h5py.File(out) as f:
        assert f.attrs["pickled_results"] == "value"
    import mtcmpi
    assert mtcmpi.load_pickled(str(out)) == [{0}, {1}, {2}]
    plain = tmp_path / "plain.h5"
    run(plain, t.square, range(2))
    with pytest.raises(ValueError, match="holds no pickles"):
        mtcmpi.load_pickled(str(plain))


def test_output_directory_is_checked(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        run(tmp_path / "no" / "r.h5", t.square, range(2))
    # root may write into any directory whatever its mode; /proc/sys is read-only even for root
    with pytest.raises(UsageError, match="/proc/sys is not writable"):
        run("/proc/sys/r.h5", t.square, range(2))


def test_count_source_fingerprint_changes_with_n():
    import hashlib
    a, b = hashlib.sha256(), hashlib.sha256()
    CountSource(3).fingerprint(a)
    CountSource(4).fingerprint(b)
    assert a.hexdigest() != b.hexdigest()


def test_h5py_without_mpi_stops_unless_serial_io(tmp_path, monkeypatch):
    class NoMPI:
        mpi = False
    monkeypatch.setattr(h5py, "get_config", lambda: NoMPI())   # results_file imports h5py where used
    with pytest.raises(UsageError, match="built without MPI.*--serial-io"):
        run(tmp_path / "r.h5", t.square, range(2))
    assert run(tmp_path / "r.h5", t.square, range(2), serial_io=True).exit_code == 0
    with h5py.File(tmp_path / "r.h5") as f:
        assert f.attrs["io_mode"] == "serial"


def test_count_keys_are_not_built_up_front_and_reach_the_file(tmp_path):
    """--count 10^8 --out starts at once: task i's key is a function of i, made in blocks."""
    import hashlib
    import time
    from mtcmpi.tasks import count_keys
    started = time.perf_counter()
    keys = CountSource(10**8).fingerprint(hashlib.sha256())
    assert time.perf_counter() - started < 0.5 and len(keys) == 10**8
    assert keys[10**8 - 2:].tolist() == count_keys(np.array([10**8 - 2, 10**8 - 1])).tolist()
    out = tmp_path / "r.h5"
    run_job(World.of(), t.square, CountSource(50), RunOptions(out=str(out)))
    with h5py.File(out) as f:
        assert f["task_keys"][:].tolist() == count_keys(np.arange(50)).tolist()
