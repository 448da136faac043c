"""The results file: one HDF5 file per run, written collectively by every rank at the end.

Layout (row = task id):
  /tasks           the per-task log, a table with fields rank, host, pid, start, end (epoch
                   seconds), status (enum: not-run, ok, failed, skipped, timeout, crashed),
                   attempts; rank -1 and NaN times for tasks that did not run
  /errors/{type, message, traceback}   UTF-8 strings, '' unless the task failed
  /attempts        with --retries: every try of every task, one row each (field task added)
  /groups          parallel tasks only (groups.py), written by rank 0: fields task, members (the
                   ranks, as ranges '1-4,7'; the first is the row's rank) and hosts (one per member,
                   comma-separated); /tasks' field ranks counts them (1 for a one-rank task)
  /task_keys       uint64 per task: a hash of its arguments, by which --costs-from matches
                   tasks of a different task list (absent when the source has no such keys)
  /results/<key>   (n_tasks, *shape) per key of the return values; rows without a result hold
                   the fill value (NaN, the smallest integer, False or b'')
  attributes: mtcmpi_version, mpi_library, ranks, policy, command_line, target, start_time,
              end_time, fingerprint, n_tasks, io_mode ('collective' or 'serial')

Every rank opens the file with the MPI-IO driver; datasets and attributes are created by all
with identical arguments; each rank writes the rows of the tasks it ran in one collective write
per dataset (a rank with no rows takes part with an empty selection). Failure texts are
variable-length strings, which parallel HDF5 cannot write, so rank 0 adds them after the
parallel file is closed (only if something failed), with the task keys it alone holds. The log is one table, not a dataset per
column: at 8 ranks each dataset costs ~10 ms of collective create and write. The file is
built as <out>.tmp and renamed: a results file that exists is complete.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
from mpi4py import MPI

from .results import fill_value, merge_schemas
from .tasklog import DONE, FAILED_STATES, STATUS_NAMES, Failure, TaskLog, members_text, read_groups
from .world import World

STATUS = h5py.enum_dtype({name: code for code, name in STATUS_NAMES.items()}, basetype="i1")
TEXT = h5py.string_dtype("utf-8")
COLUMNS = {"rank": (np.int32, -1), "host": (None, b""), "pid": (np.int64, -1),
           "start": (np.float64, np.nan), "end": (np.float64, np.nan), "status": (STATUS, 0),
           "attempts": (np.int16, 0), "ranks": (np.int16, 0)}   # host: fixed-length bytes as wide as the longest name
FAILURE_TEXT = ("type", "message", "traceback")


@dataclass
class Rows:
    """Rows of the results file that one rank writes: ids ascending, one array per column."""

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    results: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # key: (ids, values)
    failures: dict[int, Failure] = field(default_factory=dict)
    groups: dict[int, tuple[str, str]] = field(default_factory=dict)   # parallel: (members, hosts)

    @classmethod
    def empty(cls) -> "Rows":
        return cls(np.empty(0, np.int64), {k: np.empty(0, {"status": np.int8, "host": "S1"}.get(k, dt))
                                           for k, (dt, _) in COLUMNS.items()})

    @classmethod
    def of(cls, log: TaskLog, attempts: dict[int, int],
           retried: dict[int, tuple[int, int]] | None = None) -> "Rows":
        """The rows of what this rank ran in this run. attempts: tries before this run (of tasks
        run again with --retry-failed); retried: None without --retries, else the master's
        account of retried tasks, so that a task tried several times gets one row, its last."""
        ids = np.frombuffer(log.ids, np.int64) if len(log.ids) else np.empty(0, np.int64)
        if retried is None:
            pick, tries = np.argsort(ids, kind="stable"), np.ones(len(ids), np.int64)
        else:
            pick, tries = log.finals(retried)   # sorted by task id already
        k, chosen = len(pick), ids[pick]
        status = np.asarray(log.status, np.int8)[pick]
        columns = {"rank": np.full(k, log.rank, np.int32), "pid": np.full(k, log.pid, np.int64),
                   "host": np.full(k, log.host.encode(), f"S{max(1, len(log.host.encode()))}"),
                   "start": np.asarray(log.starts, np.float64)[pick],
                   "end": np.asarray(log.ends, np.float64)[pick], "status": status,
                   "attempts": np.array([attempts.get(int(t), 0) for t in chosen], np.int16) + tries,
                   "ranks": group_sizes(log, chosen)}
        failed = {int(t) for t, s in zip(chosen, status) if s in FAILED_STATES}
        results = log.results if retried is None else {   # only the tasks whose row is here
            t: log.results[t] for t in map(int, chosen) if t in log.results}
        groups = {t: group_row(log, t) for t in map(int, chosen) if t in log.groups}
        return cls(chosen, columns, stack(results), {t: log.failures[t] for t in failed}, groups)

    def without(self, drop: np.ndarray) -> "Rows":
        """These rows less those of the tasks in drop."""
        keep = ~np.isin(self.ids, drop)
        results = {k: (i[~np.isin(i, drop)], v[~np.isin(i, drop)]) for k, (i, v) in self.results.items()}
        gone = set(drop.tolist())
        return Rows(self.ids[keep], {k: v[keep] for k, v in self.columns.items()}, results,
                    {t: f for t, f in self.failures.items() if t not in gone},
                    {t: g for t, g in self.groups.items() if t not in gone})

    def merged(self, other: "Rows") -> "Rows":
        """These rows and another's (ids disjoint), in id order."""
        ids = np.concatenate([self.ids, other.ids])
        order = np.argsort(ids, kind="stable")
        columns = {k: concat(self.columns[k], other.columns[k])[order] for k in self.columns}
        results = dict(self.results)
        for key, (ids2, values2) in other.results.items():
            if key in results:
                ids1, values1 = results[key]
                both = np.concatenate([ids1, ids2])
                o = np.argsort(both, kind="stable")
                results[key] = (both[o], concat(values1, values2)[o])
            else:
                results[key] = (ids2, values2)
        return Rows(ids[order], columns, results, {**self.failures, **other.failures},
                    {**self.groups, **other.groups})


def group_sizes(log: TaskLog, ids: np.ndarray) -> np.ndarray:
    """The ranks field of these tasks' rows: 1, or the size of a parallel task's group."""
    groups = log.groups
    return np.array([len(groups[t][0]) if t in groups else 1 for t in ids.tolist()], np.int16)


def group_row(log: TaskLog, tid: int) -> tuple[str, str]:
    """A parallel task's /groups entry: (members as ranges, hosts comma-separated)."""
    members, hosts = log.groups[tid]
    return members_text(members), ",".join(hosts)


def concat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Concatenate, widening fixed-length byte strings or numbers to fit both."""
    if a.dtype.kind == "S" and b.dtype.kind == "S":
        return np.concatenate([a, b]).astype(f"S{max(a.itemsize, b.itemsize, 1)}")
    return np.concatenate([a, b]) if len(a) and len(b) else (b if len(b) else a)


def stack(results: dict[int, dict[str, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{task id: {key: array}} as {key: (ids ascending, stacked values)}."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    tids = sorted(results)
    for key in sorted({k for v in results.values() for k in v}):
        have = [t for t in tids if key in results[t]]
        out[key] = (np.array(have, np.int64), np.stack([results[t][key] for t in have]))
    return out


def schema(rows: Rows) -> dict[str, tuple[str, tuple]]:
    return {k: (values.dtype.str, values.shape[1:]) for k, (_, values) in rows.results.items()}


def select_rows(space: h5py.h5s.SpaceID, ids: np.ndarray, shape: tuple) -> None:
    """Select the rows `ids` (ascending) of a dataset, one hyperslab per run of consecutive ids."""
    space.select_none()
    if not len(ids):
        return
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    starts, ends = np.r_[0, breaks], np.r_[breaks, len(ids)]
    zeros = (0,) * len(shape)
    for lo, hi in zip(starts, ends):
        space.select_hyperslab((int(ids[lo]),) + zeros, (int(hi - lo),) + shape, op=h5py.h5s.SELECT_OR)


def write_rows(ds: h5py.Dataset, ids: np.ndarray, values: np.ndarray, dxpl: Any) -> None:
    """Write values into rows ids of ds: collectively when dxpl says so; empty ids take part too."""
    shape = ds.shape[1:]
    fspace = ds.id.get_space()
    select_rows(fspace, ids, shape)
    data = np.ascontiguousarray(values, dtype=ds.dtype) if len(ids) else np.zeros((1,) + shape, ds.dtype)
    mspace = h5py.h5s.create_simple(data.shape)
    if not len(ids):
        mspace.select_none()
    ds.id.write(mspace, fspace, data, mtype=ds.id.get_type(), dxpl=dxpl)


def log_dtype(host_width: int) -> np.dtype:
    """The row type of /tasks."""
    return np.dtype([(k, f"S{host_width}" if k == "host" else dt) for k, (dt, _) in COLUMNS.items()])


def create(f: h5py.File, n: int, host_width: int, results: dict[str, tuple[np.dtype, tuple]],
           attrs: dict[str, Any]) -> None:
    """The datasets and attributes, identically on every rank that has the file open."""
    row = log_dtype(host_width)
    fill = np.array(tuple(v for _, v in COLUMNS.values()), dtype=row)
    f.create_dataset("tasks", (n,), dtype=row, fillvalue=fill)
    for name in FAILURE_TEXT:
        f.create_dataset(f"errors/{name}", (n,), dtype=TEXT)
    f.create_group("results")
    for key, (dtype, shape) in sorted(results.items()):
        if dtype.kind == "S" and dtype.itemsize == 0:
            dtype = np.dtype("S1")
        f.create_dataset(f"results/{key}", (n,) + shape, dtype=dtype, fillvalue=fill_value(dtype))
    f.attrs.update(attrs)


def tries_dtype(host_width: int) -> np.dtype:
    """The row type of /attempts: the task's id, then the fields of /tasks."""
    row = log_dtype(host_width)
    return np.dtype([("task", np.int64)] + [(name, row.fields[name][0]) for name in row.names])


def every_try(log: TaskLog) -> np.ndarray:
    """One /attempts row per record of this rank's log (every try of every task it ran)."""
    host = log.host.encode()
    table = np.empty(len(log.ids), tries_dtype(max(1, len(host))))
    table["task"], table["rank"], table["host"], table["pid"] = log.ids, log.rank, host, log.pid
    table["start"], table["end"], table["status"] = log.starts, log.ends, log.status
    table["attempts"] = 0   # per task, in /tasks; here each row is one try
    table["ranks"] = group_sizes(log, np.frombuffer(log.ids, np.int64))
    return table


def write_tries(f: h5py.File, comm: MPI.Comm, tries: np.ndarray, host_width: int, dxpl: Any) -> None:
    """/attempts: each rank's block of rows at its offset (an exclusive scan of the counts)."""
    k = len(tries)
    total, offset = comm.allreduce(k), comm.exscan(k) or 0
    dtype = tries_dtype(host_width)
    ds = f.create_dataset("attempts", (total,), dtype=dtype)
    if total:
        write_rows(ds, np.arange(offset, offset + k), tries.astype(dtype), dxpl)


def write(world: World, path: str, n: int, rows: Rows, attrs: dict[str, Any], serial: bool,
          pickled_keys: set[str], tries: np.ndarray | None = None,
          keys: np.ndarray | None = None) -> None:
    """Build the results file at path from every rank's rows (collective); with tries (under
    --retries, on every rank alike), also the table of every try; with keys (rank 0), the
    task keys."""
    comm = world.comm
    if serial:   # rank 0 writes everything: the rows travel to it
        gathered = comm.gather((rows, tries), root=0)
        rows = Rows.empty()
        if world.rank == 0:
            for part, _ in gathered:
                rows = rows.merged(part)
            tries = None if tries is None else np.concatenate([t for _, t in gathered]) if gathered else tries
    kinds = merge_schemas(comm.allgather(schema(rows)))
    widths = [rows.columns["host"].dtype.itemsize] + ([tries["host"].dtype.itemsize] if tries is not None else [])
    host_width = comm.allreduce(max(widths), op=MPI.MAX)
    failures = comm.gather(rows.failures, root=0)
    groups = comm.gather(rows.groups, root=0)
    pickled = set().union(*comm.allgather(pickled_keys)) & set(kinds)
    attrs = dict(attrs, io_mode="serial" if serial else "collective",
                 pickled_results=",".join(sorted(pickled)))
    if serial:
        if world.rank == 0:
            with h5py.File(path, "w") as f:
                fill(f, n, host_width, kinds, attrs, rows, None)
                if tries is not None:
                    write_tries(f, MPI.COMM_SELF, tries, host_width, None)
    else:
        dxpl = h5py.h5p.create(h5py.h5p.DATASET_XFER)
        dxpl.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
        with h5py.File(path, "w", driver="mpio", comm=comm) as f:
            fill(f, n, host_width, kinds, attrs, rows, dxpl)
            if tries is not None:
                write_tries(f, comm, tries, host_width, dxpl)
    merged = {t: x for part in failures or [] for t, x in part.items()}
    grouped = {t: g for part in groups or [] for t, g in part.items()}
    if merged or keys is not None or grouped:
        with h5py.File(path, "r+") as f:
            if merged:
                write_failures(f, merged)
            if keys is not None:
                f.create_dataset("task_keys", data=keys)
            if grouped:
                write_groups(f, grouped)


def fill(f: h5py.File, n: int, host_width: int, kinds: dict, attrs: dict, rows: Rows, dxpl: Any) -> None:
    create(f, n, host_width, kinds, attrs)
    if not n:
        return   # zero-length datasets have no storage to write to (n is the same on every rank)
    table = np.empty(len(rows.ids), log_dtype(host_width))
    for name in COLUMNS:
        table[name] = rows.columns[name]
    write_rows(f["tasks"], rows.ids, table, dxpl)
    for key in sorted(kinds):
        ids, values = rows.results.get(key, (np.empty(0, np.int64), None))
        write_rows(f[f"results/{key}"], ids, values, dxpl)


def write_failures(f: h5py.File, failures: dict[int, Failure]) -> None:
    """The failure texts (rank 0, file opened without MPI-IO: parallel HDF5 cannot write them)."""
    ids = sorted(failures)
    for name in FAILURE_TEXT:
        f[f"errors/{name}"][ids] = np.array([getattr(failures[t], name) for t in ids], dtype=object)


def write_groups(f: h5py.File, groups: dict[int, tuple[str, str]]) -> None:
    """/groups: one row per parallel task (rank 0, file opened without MPI-IO: strings)."""
    ids = sorted(groups)
    table = np.array([(t, *groups[t]) for t in ids],
                     dtype=[("task", np.int64), ("members", TEXT), ("hosts", TEXT)])
    f.create_dataset("groups", data=table)


def read_rows(path: str) -> tuple[dict[str, Any], Rows, np.ndarray]:
    """An existing results file as (attributes, rows of every task that ran, status per task)."""
    with h5py.File(path, "r") as f:
        log = f["tasks"][:]
        status = log["status"].astype(np.int8)
        ids = np.flatnonzero(status != 0).astype(np.int64)
        columns = {k: log[k][ids] if k in log.dtype.names else np.ones(len(ids), np.int16)
                   for k in COLUMNS}   # ranks: a file from before parallel tasks ran one each
        columns["status"] = columns["status"].astype(np.int8)
        results = {}
        for key, ds in f["results"].items():
            values = ds[:]
            have = ids[~missing(values[ids], ds.fillvalue)] if len(ids) else ids
            results[key] = (have, values[have])
        failed = [int(i) for i in ids if status[i] not in DONE]
        texts = {name: f[f"errors/{name}"].asstr()[:] for name in FAILURE_TEXT} if failed else {}
        failures = {i: Failure(*(texts[name][i] for name in FAILURE_TEXT)) for i in failed}
        return dict(f.attrs), Rows(ids, columns, results, failures, read_groups(f)), status


def missing(values: np.ndarray, fill: Any) -> np.ndarray:
    """Which rows (first axis) hold only the fill value, i.e. had no result."""
    flat = values.reshape(len(values), -1)
    if values.dtype.kind in "fc":
        return np.isnan(flat).all(axis=1)
    return (flat == fill).all(axis=1)


def load_pickled(path: str, key: str = "value") -> list:
    """Unpickle /results/<key> of a run made with --pickle-results (None where no result).

    Reading pickles runs code from the file: call this only on files you trust.
    """
    import pickle

    with h5py.File(path, "r") as f:
        if key not in f.attrs.get("pickled_results", "").split(","):
            raise ValueError(f"{path}: /results/{key} holds no pickles (see its pickled_results attribute)")
        ok = f["tasks"]["status"] == 1
        return [pickle.loads(blob) if good else None for blob, good in zip(f[f"results/{key}"][:], ok)]
