"""Rows written straight into results.h5.tmp during the run (mtcmpi/output/direct.py): the
run-wide schema rule still holds when the file's dataset was made from a later task, and a run
stopped before finishing resumes from that file, or runs those tasks again when it is gone."""
import os

import h5py
import numpy as np
import pytest

from mtcmpi.faults import Stop
from mtcmpi.output import Output, direct, journal
from mtcmpi.output.values import result_sets
from mtcmpi.tasklog import FAILED, NOT_RUN, OK, TaskLog
from mtcmpi.world import World

pytestmark = pytest.mark.timeout(60)
N = 8


def start(out, fn, order, monkeypatch, n=N):
    """begin, then run the ids of `order` in that order (a flush after every task), in-process."""
    monkeypatch.setattr(journal, "BUFFER", 1)
    o = Output(str(out), flush_interval=60)
    todo = o.begin(World.of(), n, "fp")
    log = TaskLog(0, "h", 1)
    log.run(((i, i) for i in order if i in set(todo)), o.wrap(fn, log, Stop(), len(todo)),
            lambda: 1.0, Stop())
    o.close()
    return o, log, todo


def finish(o, log, n=N):
    o.finish(World.of(), log, n, {"n_tasks": n, "fingerprint": "fp"})


def read(out):
    with h5py.File(out) as f:
        return f["tasks"]["status"][:], {k: ds[:] for k, ds in result_sets(f).items()}


def int_then_float(i):
    return np.full(100, i, np.int64) if i else np.full(100, 0.5)


def test_a_wider_dtype_of_a_lower_id_widens_the_dataset_made_during_the_run(tmp_path, monkeypatch):
    out = tmp_path / "r.h5"
    o, log, _ = start(out, int_then_float, [3, 2, 1, 0, 4, 5, 6, 7], monkeypatch)
    with h5py.File(direct.tmp_path(str(out))) as f:   # made from task 3's int64 before task 0 ran
        assert f["results/value"].dtype == np.int64
    finish(o, log)
    status, values = read(out)
    assert status.tolist() == [OK] * N and values["value"].dtype == np.float64
    assert values["value"][:, 0].tolist() == [0.5] + list(range(1, N))


def shape_by_id(i):
    return np.zeros(50) if i == 0 else np.full(100, float(i))


def test_the_lowest_id_wins_over_a_dataset_made_from_a_later_task(tmp_path, monkeypatch):
    out = tmp_path / "r.h5"
    o, log, _ = start(out, shape_by_id, [5, 4, 3, 2, 1, 0, 6, 7], monkeypatch)
    finish(o, log)
    status, values = read(out)
    assert status.tolist() == [OK] + [FAILED] * (N - 1)
    assert values["value"].shape == (N, 50) and np.isnan(values["value"][1:]).all()


def arrays(i):
    return np.full(100, float(i))


@pytest.mark.parametrize("lose_file", [False, True])
def test_a_stopped_run_resumes_from_the_tmp_file_or_runs_its_tasks_again(tmp_path, monkeypatch, lose_file):
    out = tmp_path / "r.h5"
    start(out, arrays, [0, 1, 2], monkeypatch)          # then killed: no finish
    assert os.path.exists(direct.tmp_path(str(out))) and not os.path.exists(out)
    if lose_file:
        os.remove(direct.tmp_path(str(out)))
    o, log, todo = start(out, arrays, range(N), monkeypatch)
    assert list(todo) == list(range(0 if lose_file else 3, N))
    finish(o, log)
    status, values = read(out)
    assert status.tolist() == [OK] * N
    assert values["value"][:, 0].tolist() == list(range(N))
    assert not os.path.exists(journal.directory(str(out))) and not os.path.exists(direct.tmp_path(str(out)))


def test_a_stopped_run_leaves_its_tasks_not_run_in_the_file(tmp_path, monkeypatch):
    out = tmp_path / "r.h5"
    o, log, _ = start(out, arrays, [6, 2], monkeypatch)
    finish(o, log)
    status, values = read(out)
    assert [i for i in range(N) if status[i] == OK] == [2, 6]
    assert (status[[0, 1, 3, 4, 5, 7]] == NOT_RUN).all()
    assert np.isnan(values["value"][[0, 1, 3, 4, 5, 7]]).all() and values["value"][6, 0] == 6.0


def test_a_filesystem_that_cannot_lock_journals_every_value(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    out = tmp_path / "r.h5"
    o, log, _ = start(out, arrays, range(N), monkeypatch)
    assert not os.path.exists(direct.tmp_path(str(out)))   # nothing was written there
    finish(o, log)
    status, values = read(out)
    assert status.tolist() == [OK] * N and values["value"][:, 0].tolist() == list(range(N))
