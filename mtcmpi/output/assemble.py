"""Finish the results file at the end of a run from the journals, in bounded blocks.

Rows written into the file during the run (direct.py) are there already; each journal lists
them, which is all this needs of them. The rest — values the journal holds — each rank streams
from its own journal file frame by frame into the file (rank 0 alone with --serial-io, reading
every rank's), so no rank ever holds more than a frame of results. Rank 0 first copies what
earlier runs left (an earlier file block by block, earlier journals frame by frame) and writes
the fill value into rows that no task filled; after a flush, this run's rows follow, so they win.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
from mpi4py import MPI

from ..tasklog import DONE, FAILED, FAILED_STATES, OK, Failure
from . import hdf5, journal, members
from .values import Column, ResultMismatch, fits, mismatch, result_sets, row_bytes

if TYPE_CHECKING:   # h5py is imported where used: only the ranks that write the file load it
    import h5py

Batch = tuple[np.ndarray, Callable[[], np.ndarray]]


@dataclass
class Sources:
    """Where this rank's rows of the new file come from."""

    fingerprint: str
    journals: list[str]                                   # this run's, written by this rank here
    prior_file: str | None = None                         # rank 0: an earlier results file
    prior_journals: list[str] = field(default_factory=list)   # rank 0: earlier runs' journals
    file_kept: bool = True   # the .tmp file that earlier runs wrote rows into is there
    read: dict[bool, list[journal.Frame]] = field(default_factory=dict, repr=False)

    def frames(self, prior: bool) -> list[journal.Frame]:
        """The journals' frames (their metadata: results stay on disk until loaded), read once:
        every result key and pass over them asks again (4 passes, 3 keys: 12 reads of every
        journal made a third of the store's time on 64 ranks)."""
        if prior not in self.read:
            self.read[prior] = [frame if self.file_kept or not prior else frame.without_file_rows()
                                for path in (self.prior_journals if prior else self.journals)
                                for frame in journal.frames(path, self.fingerprint)]
        return self.read[prior]


def mismatches(frames: Iterator[journal.Frame], columns: dict[str, Column]) -> dict[int, Failure]:
    """Tasks whose value under some key does not fit that key's column (the run-wide rule)."""
    out: dict[int, Failure] = {}
    for frame in frames:
        for key, dtype, shape, ids, _ in frame.groups():
            if not fits(columns[key], dtype, shape):
                text = mismatch(key, columns[key], dtype, shape)
                for t in ids.tolist():
                    out.setdefault(t, Failure(ResultMismatch.__name__, text, f"task {t}: {ResultMismatch.__name__}: {text}\n"))
    return out


def result_batches(sources: Sources, key: str, col: Column, prior: bool,
                   in_file: bool = False) -> Iterator[Batch]:
    """This rank's (ids ascending, load values) of key that fit its column: the earlier file's
    rows of tasks that succeeded and earlier journals (prior), or this run's journals; with
    in_file, also (ids, None) of the rows written into the file during the run."""
    import h5py

    if prior and sources.prior_file:
        with h5py.File(sources.prior_file, "r") as f:
            ds = result_sets(f).get(key)
            if ds is not None:
                for part in hdf5.blocks(len(ds), row_bytes(ds.dtype, ds.shape[1:])):
                    ok = np.flatnonzero(f["tasks"].fields("status")[part] == OK)
                    if len(ok):
                        yield part.start + ok, lambda name=ds.name, part=part, ok=ok: read_rows(
                            sources.prior_file, name, part)[ok]
    for frame in sources.frames(prior):
        for k, dtype, shape, ids, offset in frame.groups():
            if k != key or not fits(col, dtype, shape):
                continue
            if offset is None:
                if in_file:
                    yield ids, None
                continue
            order = np.argsort(ids, kind="stable")
            yield ids[order], lambda fr=frame, a=(dtype, shape, len(ids), offset), o=order: fr.values(*a)[o]


def fill_batches(n: int, covered: np.ndarray | None, col: Column) -> Iterator[Batch]:
    """Rank 0: rows no task filled, with the fill value, a block at a time."""
    if covered is None:
        return
    row = max(1, row_bytes(col.dtype, col.shape))
    for part in hdf5.blocks(n, row):
        ids = part.start + np.flatnonzero(~covered[part])
        if len(ids):
            yield ids, lambda k=len(ids): np.full((k,) + col.shape, hdf5.fill_value(col.dtype))


def coverage(comm: MPI.Comm, n: int, sources: Sources, key: str, col: Column) -> np.ndarray | None:
    """Rank 0: which rows some task fills (None when all are: no fill needed); collective."""
    def ids() -> Iterator[np.ndarray]:
        for prior in (True, False):
            for got, _ in result_batches(sources, key, col, prior, in_file=True):
                yield got
    count = comm.allreduce(sum(len(i) for i in ids()))
    if count >= n:
        return None
    bits = np.zeros(n, bool)
    for got in ids():
        bits[got] = True
    packed = np.packbits(bits)
    comm.Allreduce(MPI.IN_PLACE, packed, op=MPI.BOR)
    return np.unpackbits(packed, count=n).astype(bool) if comm.rank == 0 else None


def prior_task_rows(sources: Sources, host_width: int, failed: dict[int, Failure]) -> Iterator[Batch]:
    """Rank 0: /tasks rows of earlier runs: the earlier file block by block, then earlier
    journals' records (status failed where a result did not fit)."""
    import h5py

    dtype = hdf5.log_dtype(host_width)
    if sources.prior_file:
        with h5py.File(sources.prior_file, "r") as f:
            size, itemsize = len(f["tasks"]), f["tasks"].dtype.itemsize
        for part in hdf5.blocks(size, itemsize):
            yield np.arange(part.start, part.stop), lambda part=part: hdf5.as_log_rows(
                read_rows(sources.prior_file, "tasks", part), dtype)
    for frame in sources.frames(True):
        yield journal_rows(frame, dtype, failed)


def read_rows(path: str, name: str, part: slice) -> np.ndarray:
    """Rows of dataset name in an earlier file, opened for the read: a batch's load may come
    after its generator moved on (hdf5.coalesced merges batches before loading them)."""
    import h5py

    with h5py.File(path, "r") as f:
        return f[name][part]


def journal_rows(frame: journal.Frame, dtype: np.dtype, failed: dict[int, Failure]) -> Batch:
    m, ids = frame.meta, frame.ids
    table = np.empty(len(ids), dtype)
    table["rank"], table["host"], table["pid"] = m["rank"], m["host"].encode(), m["pid"]
    table["start"], table["end"] = np.frombuffer(m["starts"], np.float64), np.frombuffer(m["ends"], np.float64)
    table["status"] = np.frombuffer(m["status"], np.int8)
    table["status"][np.isin(ids, list(failed))] = FAILED
    table["attempts"] = [m["attempts"].get(t, 0) + 1 for t in ids.tolist()]
    table["ranks"] = members.sizes(members.of_frame(m), ids)
    order = np.argsort(ids, kind="stable")   # a task in a frame twice (--retries): its last record
    last = np.r_[ids[order][1:] != ids[order][:-1], True]
    return ids[order][last], lambda: table[order][last]


def write(f: h5py.File, writer: hdf5.Writer, n: int, sources: Sources, columns: dict[str, Column],
          rows: hdf5.Rows, prior_failed: dict[int, Failure], host_width: int) -> None:
    """Every row of the file (collective): earlier runs' and fill values, flush, then this run's."""
    comm = writer.comm
    covered = {key: coverage(comm, n, sources, key, col) for key, col in sorted(columns.items())}
    sets = result_sets(f)
    if n:
        writer.stream(f["tasks"], lambda: prior_task_rows(sources, host_width, prior_failed))
        for key, col in sorted(columns.items()):
            writer.stream(sets[key], lambda: fill_batches(n, covered[key], col))
            writer.stream(sets[key], lambda: result_batches(sources, key, col, True))
    if comm.bcast(bool(sources.prior_file or sources.prior_journals), root=0):
        f.flush()   # collective: what earlier runs left is on disk before this run's rows replace
        # it (a sync, so only then: it writes every byte of the file to disk now)
    if n:
        writer.stream(f["tasks"], lambda: iter([(rows.ids, lambda: rows.table)]) if len(rows.ids) else iter(()))
        for key, col in sorted(columns.items()):
            writer.stream(sets[key], lambda: result_batches(sources, key, col, False))


def texts(path: str, n: int, sources: Sources, failures: dict[int, Failure],
          prior_failed: dict[int, Failure], keys: Any) -> None:
    """Rank 0, after the parallel file is closed: failure texts (earlier ones first, so this
    run's win; cleared for tasks that succeeded since) and the task keys."""
    import h5py

    with h5py.File(path, "r+") as f:
        texted = np.zeros(n, bool)
        if sources.prior_file:
            with h5py.File(sources.prior_file, "r") as old:
                for part in hdf5.blocks(n, 64):
                    bad = np.flatnonzero(np.isin(old["tasks"].fields("status")[part], FAILED_STATES))
                    if len(bad):
                        got = {int(part.start + i): Failure(*(old[f"errors/{k}"].asstr()[part][i] for k in hdf5.FAILURE_TEXT)) for i in bad}
                        hdf5.write_texts(f, got)
                        texted[list(got)] = True
        for frame in sources.frames(True):
            mine = set(frame.ids.tolist())
            got = {**frame.meta["failures"], **{t: x for t, x in prior_failed.items() if t in mine}}
            hdf5.write_texts(f, got)
            texted[list(got)] = True
        hdf5.write_texts(f, failures)
        texted[list(failures)] = True
        for part in hdf5.blocks(n, 64):   # a task failed earlier and succeeded now: no text
            clear = part.start + np.flatnonzero(texted[part] & np.isin(f["tasks"].fields("status")[part], DONE))
            hdf5.write_texts(f, {int(t): Failure("", "", "") for t in clear})
        if keys is not None:   # an array, or tasks.CountKeys made a block at a time
            ds = f.create_dataset("task_keys", (n,), dtype=np.uint64)
            for part in hdf5.blocks(n, 8):
                ds[part] = np.asarray(keys[part])


def groups_table(path: str, sources: Sources, groups: dict[int, members.Group]) -> None:
    """Rank 0, after the parallel file is closed: /groups of every parallel task whose row the
    file holds (earlier runs' first, so this run's, `groups`, win; none for a task run again
    on one rank)."""
    import h5py

    table: dict[int, tuple[str, str]] = {}
    if sources.prior_file:
        with h5py.File(sources.prior_file, "r") as old:
            table.update(members.read_groups(old))
    for frame in sources.frames(True):
        table.update({t: members.as_text(g) for t, g in members.of_frame(frame.meta).items()})
    table.update({t: members.as_text(g) for t, g in groups.items()})
    if not table:
        return
    with h5py.File(path, "r+") as f:
        ranks = f["tasks"].fields("ranks")[:]
        kept = {t: g for t, g in table.items() if ranks[t] > 1}
        if kept:
            members.write_groups(f, kept)


def attrs_of(columns: dict[str, Column], pickled: set[str], serial: bool, attrs: dict[str, Any]) -> dict[str, Any]:
    return dict(attrs, io_mode="serial" if serial else "collective",
                pickled_results=",".join(sorted(pickled & set(columns))))
