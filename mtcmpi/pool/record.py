"""The per-task record of a session (`connect(out=...)`): the /tasks table of a results file.

Written with plain h5py in the layout the README documents for `run --out` (rank, host, pid,
start, end, status enum, attempts, plus the pool), with /errors texts, so `mtcmpi report` and
`mtcmpi plot` read it. Rank numbers count the workers of every pool in the order they joined.
The file is written when the session's Executor shuts down, to a temporary name renamed when
complete.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .. import __version__
from ..tasklog import NOT_RUN, STATUS_NAMES

FIELDS = [("rank", np.int32), ("host", None), ("pid", np.int64), ("start", np.float64),
          ("end", np.float64), ("status", None), ("attempts", np.int16), ("pool", np.int16)]
NO_ROW = (-1, b"", -1, np.nan, np.nan, NOT_RUN, 0, -1)


class Record:
    """Rows by task number (submission order), kept in memory until written."""

    def __init__(self, path: str):
        self.path, self.started = os.path.abspath(os.path.expanduser(path)), time.time()
        self.rows: dict[int, tuple] = {}
        self.errors: dict[int, tuple[str, str, str]] = {}

    def add(self, task: int, meta: tuple, status: int, error: tuple[str, str, str] | None) -> None:
        """meta as the session sends it: (pool, rank, host, pid, start, end, attempts)."""
        pool, rank, host, pid, start, end, attempts = meta
        self.rows[task] = (rank, host.encode(), pid, start, end, status, attempts, pool)
        if error is not None:
            self.errors[task] = error

    def write(self, n_tasks: int, ranks: int, address: str) -> None:
        import h5py

        width = max((len(r[1]) for r in self.rows.values()), default=1) or 1
        status = h5py.enum_dtype({name: code for code, name in STATUS_NAMES.items()}, basetype="i1")
        dtype = np.dtype([(name, {"host": f"S{width}", "status": status}.get(name, kind))
                          for name, kind in FIELDS])
        table = np.array([self.rows.get(i, NO_ROW) for i in range(n_tasks)], dtype=dtype)
        text = h5py.string_dtype("utf-8")
        temporary = self.path + ".tmp"
        with h5py.File(temporary, "w") as f:
            f.create_dataset("tasks", data=table)
            for k, name in enumerate(("type", "message", "traceback")):
                f.create_dataset(f"errors/{name}", data=[self.errors.get(i, ("", "", ""))[k]
                                                         for i in range(n_tasks)], dtype=text)
            f.attrs.update(mtcmpi_version=__version__, ranks=ranks, policy="pool", n_tasks=n_tasks,
                           start_time=self.started, end_time=time.time(), io_mode="serial",
                           command_line=f"mtcmpi.connect() session at {address}",
                           pools=len({r[7] for r in self.rows.values() if r[7] >= 0}))
        os.replace(temporary, self.path)
