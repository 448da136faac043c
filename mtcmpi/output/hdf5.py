"""The results file: its layout, and writing and reading its rows in bounded blocks.

Layout (row = task id; the /tasks and /errors layout is layout.py's, shared with the records of
pipelines and sessions):
  /tasks           the per-task log, a table with fields rank, host, pid, start, end (epoch
                   seconds), status (enum: not-run, ok, failed, skipped, timeout, crashed),
                   attempts, ranks (1, or a parallel task's number of ranks); rank -1, NaN
                   times and ranks 0 for tasks that did not run
  /errors/{type, message, traceback}   UTF-8 strings, '' unless the task failed
  /attempts        with --retries: every try of every task, one row each (field task added)
  /groups          parallel tasks only: task, members ('1-4,7'), hosts (members.py)
  /task_keys       uint64 per task: a hash of its arguments, by which --costs-from matches
                   tasks of a different task list (absent when the source has no such keys)
  /results/<name>  (n_tasks, *shape) per key of the return values (name: values.dataset_name,
                   the key itself in the attribute 'key'); rows without a result hold the fill
                   value (values.fill_value)
  attributes: mtcmpi_version, mpi_library, ranks, policy, command_line, target, start_time,
              end_time, fingerprint, n_tasks, io_mode ('collective' or 'serial'), pickled_results

Rows are written by selections of constant-stride pieces of sorted ids (a static:cyclic share is
one piece, a block one, dynamic chunks a few each), at most PIECES pieces per write call, so the
cost is linear in the rows whatever the schedule (OR-ing one hyperslab per row is quadratic).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
from mpi4py import MPI

from ..tasklog import FAILED_STATES, OK, Failure, TaskLog
from . import members
from .layout import COLUMNS, FAILURE_TEXT, TEXT, log_dtype
from .values import Column, dataset_name, fill_value, only_fill, result_sets, row_bytes

if TYPE_CHECKING:   # h5py is imported where used: only the ranks that write the file load it
    import h5py
PIECES = 256            # hyperslab pieces OR-ed into one selection (the OR is quadratic in them)
BLOCK_BYTES = 32 << 20  # rows read or written at a time from an earlier file


def tries_dtype(host_width: int) -> np.dtype:
    """The row type of /attempts: the task's id, then the fields of /tasks."""
    row = log_dtype(host_width)
    return np.dtype([("task", np.int64)] + [(name, row.fields[name][0]) for name in row.names])


@dataclass
class Rows:
    """/tasks rows of the tasks one rank ran in this run (ids ascending) and their failures."""

    ids: np.ndarray
    table: np.ndarray
    failures: dict[int, Failure] = field(default_factory=dict)
    groups: dict[int, members.Group] = field(default_factory=dict)   # parallel tasks it led

    @classmethod
    def of(cls, log: TaskLog, host_width: int, attempts: dict[int, int],
           retried: dict[int, tuple[int, int]] | None = None) -> "Rows":
        """This rank's rows. attempts: tries before this run (--retry-failed); retried: None
        without --retries, else the master's account, so a task tried several times gets one
        row, its last try's, written by the rank that made it."""
        ids = np.frombuffer(log.ids, np.int64) if len(log.ids) else np.empty(0, np.int64)
        if retried is None:
            pick, tries = np.argsort(ids, kind="stable"), np.ones(len(ids), np.int64)
        else:
            pick, tries = log.finals(retried)   # sorted by task id already
        chosen, table = ids[pick], np.empty(len(pick), log_dtype(host_width))
        table["rank"], table["pid"], table["host"] = log.rank, log.pid, log.host.encode()
        table["start"] = np.asarray(log.starts, np.float64)[pick]
        table["end"] = np.asarray(log.ends, np.float64)[pick]
        table["status"] = np.asarray(log.status, np.int8)[pick]
        table["attempts"] = tries_before(chosen, attempts) + tries
        table["ranks"] = members.sizes(log.groups, chosen)
        failed = chosen[np.isin(table["status"], FAILED_STATES)]
        return cls(chosen, table, {int(t): log.failures[int(t)] for t in failed},
                   {t: log.groups[t] for t in chosen.tolist() if t in log.groups} if log.groups else {})

    @classmethod
    def merged(cls, parts: list["Rows"]) -> "Rows":
        """Several ranks' rows as one, in id order (--serial-io: rank 0 writes them all)."""
        ids = np.concatenate([p.ids for p in parts])
        order = np.argsort(ids, kind="stable")
        return cls(ids[order], np.concatenate([p.table for p in parts])[order],
                   {t: x for p in parts for t, x in p.failures.items()},
                   {t: g for p in parts for t, g in p.groups.items()})


def tries_before(ids: np.ndarray, attempts: dict[int, int]) -> np.ndarray:
    """Tries before this run of each of ids (ascending), vectorised: a run has millions of ids."""
    before = np.zeros(len(ids), np.int16)
    if attempts and len(ids):
        tasks = np.fromiter(attempts, np.int64, len(attempts))
        at = np.minimum(np.searchsorted(ids, tasks), len(ids) - 1)
        hit = ids[at] == tasks
        before[at[hit]] = np.fromiter(attempts.values(), np.int64, len(attempts))[hit]
    return before


def pieces(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted ids as constant-stride pieces: (index of each piece's first id, stride, count)."""
    if len(ids) < 2:
        return np.zeros(len(ids), np.int64), np.ones(len(ids), np.int64), np.ones(len(ids), np.int64)
    d = np.diff(ids)
    seg = np.r_[0, np.flatnonzero(d[1:] != d[:-1]) + 1]   # runs of equal steps in d
    ends = np.r_[seg[1:], len(d)] + 1                     # each run covers ids[seg : end]
    first = np.where(np.arange(len(seg)) == 0, seg, seg + 1)   # a shared end id goes to the earlier
    keep = first < ends
    first, ends, steps = first[keep], ends[keep], d[seg][keep]
    return first, np.maximum(steps, 1), ends - first


def selections(ids: np.ndarray, shape: tuple) -> Iterator[tuple[int, int, Callable[[h5py.h5s.SpaceID], None]]]:
    """(lo, hi, select) per write call: rows ids[lo:hi], and how to select them in a file space."""
    import h5py

    first, steps, counts = pieces(ids)
    zeros, ones = (0,) * len(shape), (1,) * len(shape)
    for p in range(0, len(first), PIECES):
        part = slice(p, p + PIECES)

        def select(space, f=first[part], s=steps[part], c=counts[part]):
            space.select_none()
            for i, step, count in zip(f.tolist(), s.tolist(), c.tolist()):
                space.select_hyperslab((int(ids[i]),) + zeros, (count,) + ones, (step,) + ones,
                                       (1,) + shape, op=h5py.h5s.SELECT_OR)
        hi = int(first[min(p + PIECES, len(first)) - 1] + counts[min(p + PIECES, len(first)) - 1])
        yield int(first[p]), hi, select


class PeerFailed(OSError):
    """Another rank could not write its part of the results file (it reports why)."""


class Writer:
    """Writes rows of one open file; collective (filtered datasets need it) or independent.

    Collectively, every rank agrees before each write call that no rank has failed so far (a
    full disk strikes some ranks only, inside a call or while reading a journal): then all
    raise together instead of some waiting in the next collective call forever."""

    def __init__(self, comm: MPI.Comm, collective: bool, parallel: bool):
        import h5py

        self.comm, self.collective = comm, collective
        self.error: OSError | None = None   # collective: this rank's failure, not yet agreed on
        self.dxpl = None
        if parallel:
            self.dxpl = h5py.h5p.create(h5py.h5p.DATASET_XFER)
            self.dxpl.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE if collective else h5py.h5fd.MPIO_INDEPENDENT)

    def calls(self, ids: np.ndarray) -> int:
        return -(-len(pieces(ids)[0]) // PIECES)

    def write(self, ds: h5py.Dataset, ids: np.ndarray, values: np.ndarray) -> None:
        """values (in the order of ids, ascending) into rows ids of ds."""
        import h5py

        shape, text = ds.shape[1:], ds.dtype.kind == "O"   # text: vlen strings, converted by h5py
        values = values if text else np.ascontiguousarray(values, dtype=ds.dtype)
        mtype = None if text else ds.id.get_type()
        fspace = ds.id.get_space()
        for lo, hi, select in selections(ids, shape):
            mem = values[lo:hi]
            self.step(lambda: (select(fspace), ds.id.write(h5py.h5s.create_simple(mem.shape), fspace, mem,
                                                          mtype=mtype, dxpl=self.dxpl)))

    def empty(self, ds: h5py.Dataset) -> None:
        """Take part in a collective write with nothing to write."""
        import h5py

        fspace = ds.id.get_space()
        fspace.select_none()
        mem = np.zeros((1,) + ds.shape[1:], ds.dtype)
        mspace = h5py.h5s.create_simple(mem.shape)
        mspace.select_none()
        self.step(lambda: ds.id.write(mspace, fspace, mem, mtype=ds.id.get_type(), dxpl=self.dxpl))

    def step(self, call: Callable[[], Any]) -> None:
        """One write call; collectively, after all ranks agreed that none has failed."""
        if not self.collective:
            call()
            return
        if self.comm.allreduce(self.error is not None, op=MPI.LOR):
            error, self.error = self.error, None
            raise error or PeerFailed(errno.EIO, "another rank could not write the results file")
        try:
            call()
        except OSError as exc:
            self.error = exc

    def stream(self, ds: h5py.Dataset, batches: Callable[[], Iterable[tuple[np.ndarray, Callable[[], np.ndarray]]]]) -> None:
        """Write every (ids ascending, load values) batch; collectively, every rank makes as
        many write calls as the rank with most (counted first from the ids alone), then all
        agree once more."""
        row = row_bytes(ds.dtype, ds.shape[1:])
        if self.collective:
            mine = sum(self.calls(ids) for ids, _ in coalesced(batches(), row))
            most = self.comm.allreduce(mine, op=MPI.MAX)
        for ids, load in coalesced(batches(), row):
            try:
                values = load()
            except OSError as exc:   # a journal that cannot be read: stop at the next agreement
                if not self.collective:
                    raise
                self.error = exc
                break
            self.write(ds, ids, values)
        if self.collective:
            for _ in range(most - mine if self.error is None else 0):
                self.empty(ds)
            self.step(lambda: None)


def coalesced(batches: Iterable[tuple[np.ndarray, Callable[[], np.ndarray]]], row: int
              ) -> Iterator[tuple[np.ndarray, Callable[[], np.ndarray]]]:
    """Batches merged up to BLOCK_BYTES of rows, ids ascending: a journal frame holds a few rows
    of one rank, and one HDF5 write per frame and key made most of the store's time (379 writes
    for 630 tasks on 64 ranks; merged, 3). Memory stays bounded by the block."""
    limit = max(1, BLOCK_BYTES // max(1, row))   # row: one row's bytes (values.row_bytes)
    group: list[tuple[np.ndarray, Callable[[], np.ndarray]]] = []
    rows = 0
    for ids, load in batches:
        if group and rows + len(ids) > limit:
            yield merged(group)
            group, rows = [], 0
        group.append((ids, load))
        rows += len(ids)
    if group:
        yield merged(group)


def merged(group: list[tuple[np.ndarray, Callable[[], np.ndarray]]]) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """One batch of several: their ids in ascending order, and a load of their values in that
    order; an id in two batches keeps the later one's value, as two writes would have."""
    if len(group) == 1:
        return group[0]
    ids = np.concatenate([i for i, _ in group])
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    last = np.r_[ids[1:] != ids[:-1], True]
    return ids[last], lambda: np.concatenate([load() for _, load in group])[order][last]


def create(f: h5py.File, n: int, host_width: int, columns: dict[str, Column], attrs: dict[str, Any],
           chunks: Callable[[Column], tuple | None], filters: dict[str, Any]) -> None:
    """The datasets and attributes, identically on every rank that has the file open (result
    datasets made during the run are kept: direct.settle fitted them to columns). Result
    rows are never pre-filled (that would write every byte twice): rows without a result get
    the fill value written explicitly."""
    row = log_dtype(host_width)
    f.create_dataset("tasks", (n,), dtype=row, fillvalue=np.array(tuple(v for _, v in COLUMNS.values()), dtype=row))
    for name in FAILURE_TEXT:
        f.create_dataset(f"errors/{name}", (n,), dtype=TEXT)
    made = f.require_group("results")   # datasets made during the run (direct.py) stay
    for key, col in sorted(columns.items()):
        if dataset_name(key) in made:
            continue
        dtype = col.dtype if col.dtype.itemsize else np.dtype("S1")
        shape = chunks(col)
        ds = f.create_dataset(f"results/{dataset_name(key)}", (n,) + col.shape, dtype=dtype,
                              fillvalue=fill_value(dtype), fill_time="never",
                              chunks=(min(n, shape[0]),) + shape[1:] if n and shape else None,
                              **(filters if n else {}))
        ds.attrs["key"] = key
    f.attrs.update(attrs)


def blocks(n: int, row_bytes: int) -> Iterator[slice]:
    step = max(1, BLOCK_BYTES // max(1, row_bytes))
    return (slice(lo, min(n, lo + step)) for lo in range(0, n, step))


def read_state(path: str, prior: Any) -> dict[str, Any]:
    """An earlier results file: its attributes, and (into prior) status, tries, result schema."""
    import h5py

    from ..errors import UsageError

    try:
        with h5py.File(path, "r") as f:
            tasks = f["tasks"]
            for part in blocks(len(tasks), tasks.dtype.itemsize):
                if part.stop > len(prior.status):
                    break
                rows = tasks[part]
                prior.status[part] = rows["status"]
                prior.attempts[part] = rows["attempts"]
            prior.host_width = max(prior.host_width, tasks.dtype["host"].itemsize)
            for key, ds in result_sets(f).items():
                prior.schema.add(key, ds.dtype, ds.shape[1:], -1)   # stored already: it wins
            return dict(f.attrs)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"--out {path} exists and is not a complete mtcmpi results file ({exc}): "
                         "move it away, or pass --restart to replace it") from None


def as_log_rows(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """An earlier file's /tasks rows in this layout: one from before parallel tasks has no
    field ranks, and each of its tasks that ran ran on one rank."""
    if "ranks" in rows.dtype.names:
        return rows.astype(dtype)
    out = np.empty(len(rows), dtype)
    for name in rows.dtype.names:
        out[name] = rows[name]
    out["ranks"] = rows["status"] != 0
    return out


def every_try(log: TaskLog, host_width: int) -> np.ndarray:
    """One /attempts row per record of this rank's log (every try of every task it ran)."""
    table = np.empty(len(log.ids), tries_dtype(host_width))
    table["task"], table["rank"], table["host"], table["pid"] = log.ids, log.rank, log.host.encode(), log.pid
    table["start"], table["end"], table["status"] = log.starts, log.ends, log.status
    table["attempts"] = 0   # per task, in /tasks; here each row is one try
    table["ranks"] = members.sizes(log.groups, log.ids)
    return table


def write_tries(f: h5py.File, writer: Writer, tries: np.ndarray) -> None:
    """/attempts: each rank's block of rows at its offset (an exclusive scan of the counts)."""
    k = len(tries)
    total, offset = writer.comm.allreduce(k), writer.comm.exscan(k) or 0
    ds = f.create_dataset("attempts", (total,), dtype=tries.dtype)
    writer.stream(ds, lambda: iter([(np.arange(offset, offset + k), lambda: tries)] if k else []))


def write_texts(f: h5py.File, failures: dict[int, Failure]) -> None:
    """Failure texts (rank 0, file opened without MPI-IO: parallel HDF5 cannot write them)."""
    if not failures:
        return
    ids = np.array(sorted(failures), np.int64)
    writer = Writer(MPI.COMM_SELF, False, False)
    for name in FAILURE_TEXT:
        writer.write(f[f"errors/{name}"], ids, np.array([getattr(failures[t], name) for t in ids.tolist()], dtype=object))


def load_pickled(path: str, key: str = "value") -> list:
    """Unpickle /results/<key> of a run made with --pickle-results (None where no result).

    Reading pickles runs code from the file: call this only on files you trust.
    """
    import h5py

    import pickle

    with h5py.File(path, "r") as f:
        if key not in f.attrs.get("pickled_results", "").split(","):
            raise ValueError(f"{path}: /results/{key} holds no pickles (see its pickled_results attribute)")
        ds, out = result_sets(f)[key], []
        for part in blocks(len(ds), ds.dtype.itemsize):
            ok = f["tasks"].fields("status")[part] == OK
            out += [pickle.loads(blob) if good else None for blob, good in zip(ds[part], ok)]
        return out


def load_results(path: str) -> list[dict[str, np.ndarray] | None]:
    """Each task's stored values as {key: array}, None where it stored none (what mtcmpi.run
    returns with out=: the values live in the file, not in the ranks' memory). Read a block of
    rows at a time."""
    import h5py

    with h5py.File(path, "r") as f:
        ok = f["tasks"].fields("status")[:] == OK
        out: list[dict[str, np.ndarray] | None] = [None] * len(ok)
        for key, ds in result_sets(f).items():
            for part in blocks(len(ds), max(1, row_bytes(ds.dtype, ds.shape[1:]))):
                rows = ds[part]
                have = ok[part] & ~only_fill(rows)
                for i in np.flatnonzero(have):
                    out[part.start + i] = dict(out[part.start + i] or {}, **{key: rows[i]})
        return out


def mpio_name(path: str) -> str:
    """The name to open path by with the MPI-IO driver. ROMIO (MPICH and its family) reads what
    comes before a ':' as a file-system prefix ('nfs:', 'lustre:'), so a path with a colon of its
    own fails ('Other I/O error'); the generic 'ufs:' prefix keeps it whole. Open MPI's ompio
    takes the path as it is."""
    if ":" in path and not MPI.Get_library_version().startswith("Open MPI"):
        return "ufs:" + path
    return path

