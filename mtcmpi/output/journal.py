"""The durable record of finished tasks while a run goes on: one append-only file per rank,
written and read here.

A frame holds the tasks a rank finished since the last flush: a header (magic, CRC of the
metadata, lengths), the metadata (pickled: the run's fingerprint, rank, host, pid, and per task
id, times, status, tries before, failure, and the ranks of a parallel task: members.py) and then the results as raw arrays, one block per
(key, dtype, shape) group, so the final file can read them back without unpickling them and a
reader that needs only the metadata seeks past them. A group written straight into the results
file before the frame (direct.py) is listed with its ids and has no block here. A background thread flushes every
`interval` seconds, at once when woken (a stop signal: mpiexec kills 1 s later), and the task
loop flushes itself once BUFFER bytes of results wait, so a rank never holds more than that.
After a kill the last frame may be cut short: reading stops there silently. A frame that is
whole but damaged, or one of another task list, is an error: the journal is not this run's.
Pickle is fine for the metadata: the journal is mtcmpi's own scratch, never the output.
Writing needs numpy only for arrays: plain numbers and strings (values.Plain) are written as
their bytes, so a rank whose tasks return only those never imports it.
"""
from __future__ import annotations

import math
import os
import pickle
import struct
import threading
import time
import zlib
from array import array
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

from ..errors import UsageError
from ..tasklog import NOT_RUN, TaskLog
from . import members
from .values import Plain, Schema, row_bytes

if TYPE_CHECKING:   # numpy is imported where used: for arrays, and by the readers
    import numpy as np

    from .direct import DirectRows

HEAD = struct.Struct("<8sIIQ")   # magic, crc32 of the metadata, metadata bytes, result bytes
MAGIC = b"MTCMPIJ3"
BUFFER = 32 << 20   # results a rank holds before its task loop flushes them itself


def directory(out: str) -> str:
    """Where the journal of results file `out` lives."""
    return out + ".journal"


def files(out: str, run_id: str = "") -> list[str]:
    """The journal files of `out` (of one run, if run_id), oldest first."""
    import glob   # rank 0 looks for journals; a worker only writes its own

    found = glob.glob(os.path.join(directory(out), f"*{'-' + run_id if run_id else ''}.jnl"))
    return sorted(found, key=lambda p: (os.path.getmtime(p), p))


def exists(out: str) -> bool:
    """Whether `out` has journal files (an earlier run was interrupted)."""
    return bool(files(out))


class Journal:
    """This rank's journal file; flush() appends the records of `log` not yet written and
    drops their results from the log. A write that fails (disk full) calls on_error once and
    writes nothing more: what was flushed before stays whole. make_direct, if given, makes the
    writer of rows straight into the results file (direct.py), when the first array comes."""

    def __init__(self, out: str, log: TaskLog, run_id: str, fingerprint: str,
                 attempts: dict[int, int] | None = None,
                 on_error: Callable[[str], None] | None = None,
                 make_direct: "Callable[[], DirectRows] | None" = None):
        self.path = os.path.join(directory(out), f"rank{log.rank:05d}-{run_id}.jnl")
        self.file = open(self.path, "ab", buffering=0)
        self.log, self.fingerprint, self.attempts = log, fingerprint, attempts or {}
        self.on_error, self.make_direct = on_error, make_direct
        self.direct: "DirectRows | None" = None
        self.written = 0
        self.pending = 0   # bytes of results in the log not yet journalled (approximate)
        self.error: str | None = None
        self.schema = Schema()   # of what this rank journalled
        self.lock = threading.Lock()

    def added(self, arrays: "dict[str, np.ndarray | Plain] | None") -> None:
        """A task's result is about to be recorded: flush now if BUFFER bytes wait."""
        if arrays:
            self.pending += sum(a.nbytes for a in arrays.values())
            if self.pending > BUFFER:
                self.flush()

    def flush(self) -> None:
        """Append one frame with every record completed since the last flush."""
        with self.lock:
            log, lo = self.log, self.written
            flushed = time.time()   # before hi: every task recorded by now is in this frame
            hi = len(log.ends)   # ends is appended last, so every record below hi is complete
            if hi == lo or self.error:
                return
            ids = log.ids[lo:hi]
            at = self.file.tell()
            try:
                meta, raw = self.frame(ids, flushed)   # rows for the file go there now
                meta["status"] = log.status[lo:hi].tobytes()
                meta["starts"], meta["ends"] = log.starts[lo:hi].tobytes(), log.ends[lo:hi].tobytes()
                data = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
                blocks = [memoryview(block).cast("B") for block in raw]
                size = sum(len(block) for block in blocks)
                self.file.write(HEAD.pack(MAGIC, zlib.crc32(data), len(data), size) + data)
                for block in blocks:
                    self.file.write(block)
            except OSError as exc:
                self.fail(exc, at)
                return
            for key, dt, shape, gids, _ in meta["groups"]:
                self.schema.add(key, dt, shape, min(ids_of(gids)))
            for t in ids:
                log.results.pop(t, None)
            self.written, self.pending = hi, 0

    def frame(self, ids, flushed: float) -> tuple[dict, list]:
        """The metadata and result blocks of the records ids (results grouped by key, dtype,
        shape, in id order); groups the results file takes are written there first."""
        log = self.log
        groups: dict[tuple, list] = {}
        for t in sorted(dict.fromkeys(ids)):   # a task tried twice in one frame has one result
            for key, a in (log.results.get(t) or {}).items():
                dt = a.dtype if type(a) is Plain else a.dtype.str
                groups.setdefault((key, dt, a.shape), []).append((t, a))
        listed, raw = [], []
        for (key, dt, shape), rows in groups.items():
            gids = array("q", [t for t, _ in rows]).tobytes()
            values = [a for _, a in rows]
            if all(type(a) is Plain for a in values):
                listed.append((key, dt, shape, gids, False))
                raw.append(b"".join(a.data for a in values))
                continue
            import numpy as np   # a task returned an array: numpy is loaded already

            arrays = [np.frombuffer(a.data, dt).reshape(()) if type(a) is Plain else a for a in values]
            if self.direct is None and self.make_direct is not None:
                self.direct = self.make_direct()
            in_file = self.direct is not None and self.direct.write(
                key, np.dtype(dt), shape, np.frombuffer(gids, np.int64), arrays)
            listed.append((key, dt, shape, gids, in_file))
            if not in_file:
                raw.append(np.ascontiguousarray(np.stack(arrays)))
        meta = {"fingerprint": self.fingerprint, "rank": log.rank, "host": log.host, "pid": log.pid,
                "flushed": flushed, "ids": ids.tobytes(),
                "attempts": {t: self.attempts[t] for t in ids if t in self.attempts},
                "failures": {t: log.failures[t] for t in ids if t in log.failures},
                members.FIELD: {t: log.groups[t] for t in ids if t in log.groups} if log.groups else {},
                "groups": listed}
        return meta, raw

    def fail(self, exc: OSError, at: int) -> None:
        try:   # leave no torn frame behind: later readers stop at one
            self.file.truncate(at)
        except OSError:
            pass
        self.error = (f"finished tasks cannot be saved ({exc.strerror or exc}: {exc.filename or self.path}): "
                      "what was saved is kept; free space there and run the same command again to resume")
        if self.on_error:
            self.on_error(self.error)

    def close(self) -> None:
        self.flush()
        self.file.close()
        if self.direct:
            self.direct.close()


class Flusher(threading.Thread):
    """Flushes a journal every `interval` seconds, at once when woken, until stopped, then once more."""

    def __init__(self, journal: Journal, interval: float):
        super().__init__(name="mtcmpi-journal", daemon=True)
        self.journal, self.interval = journal, interval
        self.wakeup = threading.Event()
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            self.wakeup.wait(self.interval)
            self.wakeup.clear()
            try:
                self.journal.flush()
            except Exception as exc:   # a bug must not end this thread silently with tasks going on
                self.journal.fail(OSError(str(exc)), self.journal.file.tell())

    def wake(self) -> None:
        """Flush now (a stop signal came: mpiexec may kill the ranks within a second)."""
        self.wakeup.set()

    def stop(self) -> None:
        self.stopping = True
        self.wakeup.set()
        self.join()
        self.journal.close()


def ids_of(raw: bytes) -> array:
    """Task ids as the journal stores them (int64), without numpy."""
    ids = array("q")
    ids.frombytes(raw)
    return ids


class Frame(NamedTuple):
    """One frame read back: its metadata, and where its result blocks start in its file.
    (NamedTuples and plain classes on every rank's path, not dataclasses: see world.World.)"""

    meta: dict
    path: str
    offset: int

    @property
    def ids(self) -> np.ndarray:
        import numpy as np

        return np.frombuffer(self.meta["ids"], np.int64)

    def groups(self) -> Iterator[tuple[str, np.dtype, tuple, np.ndarray, int | None]]:
        """(key, dtype, shape, ids, offset of its block) of every result group; offset None
        for a group written into the results file."""
        import numpy as np

        offset = self.offset
        for key, dt, shape, gids, in_file in self.meta["groups"]:
            ids, dtype = np.frombuffer(gids, np.int64), np.dtype(dt)
            yield key, dtype, tuple(shape), ids, None if in_file else offset
            if not in_file:
                offset += len(ids) * row_bytes(dtype, shape)

    def without_file_rows(self) -> "Frame":
        """This frame as if its tasks with results in the file had not run (that file was
        lost): their status not-run, so the next run runs them again."""
        import numpy as np

        meta = dict(self.meta)
        meta["groups"] = [g for g in self.meta["groups"] if not g[4]]
        void = b"".join(g[3] for g in self.meta["groups"] if g[4])
        if void:
            status = np.frombuffer(meta["status"], np.int8).copy()
            status[np.isin(self.ids, np.frombuffer(void, np.int64))] = NOT_RUN
            meta["status"] = status.tobytes()
        return Frame(meta, self.path, self.offset)

    def values(self, dtype: np.dtype, shape: tuple, count: int, offset: int) -> np.ndarray:
        import numpy as np

        with open(self.path, "rb") as f:
            f.seek(offset)
            return np.fromfile(f, dtype=dtype, count=count * math.prod(shape)).reshape((count,) + shape)


def frames(path: str, fingerprint: str | None = None, out: str = "") -> Iterator[Frame]:
    """The frames of one journal file, stopping silently at a torn last one; UsageError for a
    damaged frame or one of another task list (fingerprint, when given)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        at = 0
        while at + HEAD.size <= size:
            magic, crc, meta_len, raw_len = HEAD.unpack(f.read(HEAD.size))
            end = at + HEAD.size + meta_len + raw_len
            if magic == MAGIC and end > size:
                return   # cut short by a kill: everything before it counts
            data = f.read(meta_len) if magic == MAGIC else b""
            if magic != MAGIC or zlib.crc32(data) != crc:
                raise UsageError(f"--out {out or path}: journal file {path} is damaged at byte {at} "
                                 "(or not mtcmpi's): move it away, or pass --restart to start over")
            meta = pickle.loads(data)
            if fingerprint is not None and meta.get("fingerprint") != fingerprint:
                raise UsageError(f"--out {out or path}: its journal holds results of a different task "
                                 "list (target or arguments changed); pass --restart to start over, "
                                 "or use another --out")
            yield Frame(meta, path, at + HEAD.size + meta_len)
            at = end
            f.seek(at)


def read(out: str, fingerprint: str | None = None) -> Iterator[Frame]:
    """Every frame of every journal file of `out`, oldest files first."""
    for path in files(out):
        yield from frames(path, fingerprint, out)
