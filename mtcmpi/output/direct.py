"""Results written straight into the results file while the run goes on: each byte once.

The file is built as results.h5.tmp. The first rank to journal a numeric result of a key
creates its dataset there: contiguous, its space allocated at once (a hole, nothing written),
under a lock file so that ranks never change the file's metadata at the same time; the
dataset's byte offset goes into a small sidecar (layout.json in the journal directory) that the
other ranks read. From then on each rank writes its rows with plain pwrite at offset + id x row
bytes (runs of consecutive ids in one pwritev), before the journal frame that records those
tasks: what a frame says is in the file is in the file. A killed run leaves a readable .tmp
(its metadata was complete when each dataset was made) that the next run goes on filling.

Only results that can go there go there: numbers (strings change their width from task to
task), rows of at least SMALL_ROW bytes (smaller rows cost a system call each and are cheap to
journal), uncompressed, parallel I/O; and a value whose kind, shape or dtype does not fit the
dataset already made (the run-wide rule is applied at the end) is journalled instead. So is every value on a filesystem that cannot lock a file (the lock keeps
two ranks from changing the file's metadata at once): then the journal holds them all, as with
--serial-io.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from . import journal
from .values import NUMERIC, Column, dataset_name, fill_value, kind_of, result_sets, row_bytes

SMALL_ROW = 512          # bytes: rows smaller than this are journalled
SPARE = 1 << 20          # bytes a disk must have free before the file's metadata is changed
IOV_MAX = 1024           # buffers per pwritev
LAYOUT, LOCK = "layout.json", "layout.lock"
NO_LOCKS = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)   # lockf unsupported here
Place = tuple[int, np.dtype, tuple]   # byte offset of a dataset's row 0, its dtype, row shape


def tmp_path(out: str) -> str:
    """Where the file of `out` is built."""
    return out + ".tmp"


def new_id() -> str:
    """A fresh identity for a .tmp file and the journal that refers to it."""
    return os.urandom(16).hex()   # a uuid4's randomness, without importing uuid on every rank


def usable(out: str, file_id: str | None) -> bool:
    """Whether results.h5.tmp is the file the journal's frames wrote rows into (readable, same id)."""
    import h5py

    if not file_id or not os.path.exists(tmp_path(out)):
        return False
    try:
        with h5py.File(tmp_path(out), "r") as f:
            return f.attrs.get("file_id") == file_id
    except (OSError, RuntimeError, KeyError, ValueError):
        return False


def discard(out: str) -> None:
    """Remove a .tmp that the journal cannot use, and its layout."""
    for stale in (tmp_path(out), os.path.join(journal.directory(out), LAYOUT)):
        if os.path.lexists(stale):
            os.remove(stale)


def fits_file(place: Place, dtype: np.dtype, shape: tuple) -> bool:
    """A value goes into the dataset made already if kind and shape agree and its dtype
    converts to the dataset's without widening it."""
    have, shape_there = place[1], place[2]
    return (kind_of(dtype) == kind_of(have) and tuple(shape) == shape_there
            and np.result_type(have, dtype) == have)


class DirectRows:
    """One rank's writer of result rows into the .tmp file; write() returns False for a group
    that must be journalled instead."""

    def __init__(self, out: str, n: int, file_id: str):
        self.out, self.n, self.file_id = out, n, file_id
        self.tmp = tmp_path(out)
        self.layout_path = os.path.join(journal.directory(out), LAYOUT)
        self.places: dict[str, Place] = {}
        self.fd: int | None = None
        self.unlockable = False   # this filesystem cannot lock: everything goes to the journal

    def write(self, key: str, dtype: np.dtype, shape: tuple, ids: np.ndarray, arrays: list) -> bool:
        """Rows ids (ascending) of key into the file; OSError (a full disk) propagates."""
        if (self.unlockable or dtype.kind not in NUMERIC
                or row_bytes(dtype, shape) < SMALL_ROW):
            return False
        try:
            place = self.place(key, dtype, shape)
        except OSError as exc:
            if exc.errno not in NO_LOCKS:
                raise
            self.unlockable = True
            return False
        if not fits_file(place, dtype, shape):
            return False
        offset, have, _ = place
        row = row_bytes(have, shape)
        if self.fd is None:
            self.fd = os.open(self.tmp, os.O_WRONLY)
        starts = np.r_[0, np.flatnonzero(np.diff(ids) != 1) + 1, len(ids)]
        for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist()):
            for at in range(lo, hi, IOV_MAX):
                bufs = [np.ascontiguousarray(a, have) for a in arrays[at:min(hi, at + IOV_MAX)]]
                write_all(self.fd, bufs, offset + int(ids[at]) * row)
        return True

    def place(self, key: str, dtype: np.dtype, shape: tuple) -> Place:
        """Where key's dataset is: known, in the sidecar, or made now (under the lock)."""
        if key not in self.places:
            self.places = self.read()
        if key not in self.places:
            with self.locked():
                self.places = self.read()
                if key not in self.places:
                    self.places[key] = self.create(key, dtype, shape)
                    text = json.dumps({k: [o, d.str, list(s)] for k, (o, d, s) in self.places.items()})
                    with open(self.layout_path + ".new", "w") as f:
                        f.write(text)
                    os.replace(self.layout_path + ".new", self.layout_path)
        return self.places[key]

    def read(self) -> dict[str, Place]:
        return layout(self.out)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with open(os.path.join(journal.directory(self.out), LOCK), "a") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(lock, fcntl.LOCK_UN)

    def create(self, key: str, dtype: np.dtype, shape: tuple) -> Place:
        """key's dataset in the .tmp file (made if need be), its space allocated, nothing written."""
        import h5py

        require(self.tmp, 0)
        with h5py.File(self.tmp, "a", locking=False) as f:   # under our lock already
            f.attrs.setdefault("file_id", self.file_id)
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            ds = f.create_dataset(f"results/{dataset_name(key)}", (self.n,) + tuple(shape), dtype=dtype,
                                  fillvalue=fill_value(dtype), fill_time="never", dcpl=dcpl)
            ds.attrs["key"] = key
            return int(ds.id.get_offset()), np.dtype(dtype), tuple(shape)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def layout(out: str) -> dict[str, Place]:
    """The datasets made in the .tmp file during the run, by key (from the sidecar)."""
    try:
        with open(os.path.join(journal.directory(out), LAYOUT)) as f:
            return {k: (o, np.dtype(d), tuple(s)) for k, (o, d, s) in json.load(f).items()}
    except FileNotFoundError:
        return {}


def require(path: str, nbytes: int) -> None:
    """OSError ENOSPC unless the disk of path has nbytes and SPARE free: a full disk must not
    strike while HDF5 writes a file's metadata (a torn .tmp file could not be used again)."""
    st = os.statvfs(os.path.dirname(path))
    if st.f_bavail * st.f_frsize < nbytes + SPARE:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def holes(out: str) -> int:
    """Bytes of the .tmp file not on disk yet: rows no task wrote, which get the fill value."""
    try:
        st = os.stat(tmp_path(out))
    except FileNotFoundError:
        return 0
    return max(0, st.st_size - st.st_blocks * 512)


def write_all(fd: int, bufs: list[np.ndarray], at: int) -> None:
    """All of bufs at byte `at` (pwritev may write less; the rest then goes piece by piece)."""
    total = sum(b.nbytes for b in bufs)
    done = os.pwritev(fd, bufs, at)
    if done < total:
        rest = memoryview(b"".join(memoryview(b).cast("B") for b in bufs))[done:]
        while rest:
            k = os.pwrite(fd, rest, at + done)
            done, rest = done + k, rest[k:]


def settle(out: str, columns: dict[str, Column]) -> None:
    """Rank 0 before the file is finished: drop what an earlier failed finish left beside
    /results, widen a dataset whose key's column got a wider dtype (a block at a time), and
    drop one whose key's column has another kind or shape (its rows all failed)."""
    import h5py

    from .hdf5 import blocks

    tmp = tmp_path(out)
    if not os.path.exists(tmp):
        return
    with h5py.File(tmp, "a") as f:
        for name in [name for name in f if name != "results"]:
            del f[name]
        for key, ds in result_sets(f).items():
            col, name = columns.get(key), ds.name
            if col is None or kind_of(col.dtype) != kind_of(ds.dtype) or col.shape != ds.shape[1:]:
                del f[name]
            elif col.dtype != ds.dtype:
                wide = f.create_dataset(name + "~", ds.shape, dtype=col.dtype, fillvalue=fill_value(col.dtype),
                                        fill_time="never")
                with np.errstate(all="ignore"):
                    for part in blocks(len(ds), row_bytes(ds.dtype, ds.shape[1:])):
                        wide[part] = ds[part].astype(col.dtype)
                wide.attrs["key"] = key
                del f[name]
                f.move(name + "~", name)
