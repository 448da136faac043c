"""The results file's rules (one rank, in-process): one schema rule for the run, every storable
kind, keys with '/', junk at --out refused with one line, paths fixed at start-up, compression."""
import os

import h5py
import numpy as np
import pytest

from mtcmpi.errors import UsageError
from mtcmpi.job import run_job
from mtcmpi.output import Output
from mtcmpi.output.values import result_sets
from mtcmpi.options import RunOptions
from mtcmpi.tasklog import FAILED, OK
from mtcmpi.tasks import ItemsSource
from mtcmpi.world import World

pytestmark = pytest.mark.timeout(60)


def run(out, fn, items, schedule="dynamic", **opts):
    return run_job(World.of(), fn, ItemsSource(items), RunOptions(out=str(out), schedule=schedule, **opts))


def shape_changes(x):
    return 1.5 if x == 0 else np.zeros(3)


def test_a_changed_shape_fails_those_tasks_by_the_lowest_id_and_the_file_is_stored(tmp_path):
    outcome = run(tmp_path / "r.h5", shape_changes, range(6))
    assert outcome.exit_code == 1
    with h5py.File(tmp_path / "r.h5") as f:
        status = f["tasks"]["status"][:]
        assert status.tolist() == [OK] + [FAILED] * 5 and f["results/value"].shape == (6,)
        assert f["errors/type"].asstr()[3] == "ResultMismatch"
        assert "task 0" in f["errors/message"].asstr()[3]


def test_complex_strings_and_slash_keys_are_stored(tmp_path):
    run(tmp_path / "r.h5", lambda x: {"energy/total": complex(x, -x), "energy": x, "s": "é" * x}, range(3))
    with h5py.File(tmp_path / "r.h5") as f:
        sets = result_sets(f)
        assert sets["energy/total"][:].tolist() == [0j, 1 - 1j, 2 - 2j]
        assert sets["energy"][:].tolist() == [0, 1, 2]
        assert sets["s"][2].decode() == "éé"


def test_complex_fill_value_and_nul_strings_fail_up_front(tmp_path):
    outcome = run(tmp_path / "r.h5", lambda x: b"a\0" if x == 1 else (None if x == 2 else 1j), range(3))
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["tasks"]["status"][1] == FAILED and "NUL" in f["errors/message"].asstr()[1]
        assert np.isnan(f["results/value"][2])
    assert outcome.exit_code == 1


@pytest.mark.parametrize("junk", ["text", "half", "other", "dir", "journal"])
def test_junk_at_out_is_one_line(tmp_path, junk):
    out = tmp_path / "r.h5"
    if junk == "text":
        out.write_text("hello")
    elif junk in ("half", "journal"):
        run(out, lambda x: x, range(4))
        if junk == "half":
            data = out.read_bytes()
            out.write_bytes(data[: len(data) // 2])
        else:
            os.remove(out)
            os.makedirs(str(out) + ".journal")
            with open(str(out) + ".journal/rank00000-x.jnl", "wb") as f:
                f.write(b"garbage" * 20)
    elif junk == "other":
        with h5py.File(out, "w") as f:
            f["x"] = 1
    else:
        os.makedirs(out)
    with pytest.raises(UsageError):
        run(out, lambda x: x, range(4))
    if junk != "dir":
        assert run(out, lambda x: x, range(4), restart=True).exit_code == 0


def test_a_journal_without_its_meta_is_not_taken_by_another_task_list(tmp_path):
    out = tmp_path / "r.h5"
    source = ItemsSource(range(10))
    o = Output(str(out))
    world = World.of()
    o.begin(world, 10, "fingerprint-a")
    from mtcmpi.tasklog import TaskLog
    from mtcmpi.faults import Stop
    log = TaskLog(0, "h", 1)
    invoke = o.wrap(lambda x: x, log, Stop(), 10)
    log.run(source.take(range(5)), invoke, lambda: 1.0, Stop())
    o.close()   # as a killed run leaves it: a journal, no file
    os.remove(str(out) + ".journal/meta.json")
    with pytest.raises(UsageError, match="different task list"):
        Output(str(out)).begin(world, 10, "fingerprint-b")


@pytest.mark.parametrize("path, message", [("", "needs a file name"), ("sub/", "is a directory")])
def test_bad_out_paths(path, message):
    with pytest.raises(UsageError, match=message):
        Output(path)


def chdir_task(x):
    os.makedirs("elsewhere", exist_ok=True)
    os.chdir("elsewhere")
    return x


def test_relative_out_is_fixed_at_start_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("r.h5", chdir_task, range(3)).exit_code == 0
    assert os.path.exists(tmp_path / "r.h5") and not os.path.exists(tmp_path / "r.h5.journal")


@pytest.mark.parametrize("compression", ["gzip:1", "lzf"])
def test_compressed_and_chunked(tmp_path, compression):
    run(tmp_path / "r.h5", lambda x: np.full((4, 5), x), range(7), compression=compression, chunk_rows=3)
    with h5py.File(tmp_path / "r.h5") as f:
        ds = f["results/value"]
        assert ds.compression == compression.split(":")[0] and ds.chunks == (3, 4, 5)
        assert ds[:, 0, 0].tolist() == list(range(7))
    with pytest.raises(UsageError, match="--compression"):
        Output("x.h5", compression="zstd")


def test_results_leave_memory_once_journalled(tmp_path, monkeypatch):
    import mtcmpi.output.journal as journal
    monkeypatch.setattr(journal, "BUFFER", 1000)
    seen = []

    def record(x):
        seen.append(len(outcome_log[0].results))
        return np.zeros(100)   # 800 bytes: a flush every second task
    from mtcmpi.tasklog import TaskLog
    from mtcmpi.faults import Stop
    o = Output(str(tmp_path / "r.h5"))
    o.begin(World.of(), 20, "fp")
    log = TaskLog(0, "h", 1)
    outcome_log = [log]
    invoke = o.wrap(record, log, Stop(), 20)
    log.run(((i, i) for i in range(20)), invoke, lambda: 1.0, Stop())
    o.close()
    assert max(seen) <= 2 and not log.results


def test_small_batches_merge_into_one_write_in_id_order(monkeypatch):
    """A frame per rank and key: merged up to a block of rows (one HDF5 write, not one per
    frame), ids ascending, an id in two batches keeping the later value, nothing loaded early."""
    from mtcmpi.output import hdf5

    loaded = []

    def batch(ids, values):
        return np.array(ids), lambda: loaded.append(ids) or np.array(values)

    batches = [batch([1, 5], [10, 50]), batch([0, 2, 5], [0, 20, 55]), batch([7], [70])]
    monkeypatch.setattr(hdf5, "BLOCK_BYTES", 8 * 5)   # 5 rows of 8 bytes a block
    got = list(hdf5.coalesced(iter(batches), 8))
    assert not loaded and [ids.tolist() for ids, _ in got] == [[0, 1, 2, 5], [7]]
    assert got[0][1]().tolist() == [0, 10, 20, 55] and got[1][1]().tolist() == [70]
