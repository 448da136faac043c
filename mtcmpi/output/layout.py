"""The /tasks table and /errors texts that every per-task record holds, and the writer of a
whole record by one process.

Three files share this layout, so `mtcmpi report` and `mtcmpi plot` read them alike: the results
file of `run --out` (hdf5.py writes its rows in parallel, in blocks), the record of a pipeline
(pipeline/record.py: a stage column, /task_ids, /waited_for) and the record of a session
(pool/record.py: a pool column). The last two are written whole by write_record. No mpi4py
here: a notebook's session writes its record without starting MPI.
"""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..tasklog import STATUS_NAMES
from .values import TEXT

# h5py.enum_dtype without h5py, which only the ranks that write a file import (values.TEXT too)
STATUS = np.dtype(np.int8, metadata={"enum": {name: code for code, name in STATUS_NAMES.items()}})
COLUMNS = {"rank": (np.int32, -1), "host": (None, b""), "pid": (np.int64, -1),
           "start": (np.float64, np.nan), "end": (np.float64, np.nan), "status": (STATUS, 0),
           "attempts": (np.int16, 0), "ranks": (np.int16, 0)}   # host: fixed-length bytes as wide as the longest name
FAILURE_TEXT = ("type", "message", "traceback")


def log_dtype(host_width: int, extra: Sequence[tuple[str, Any]] = ()) -> np.dtype:
    """The row type of /tasks; extra (name, dtype) columns follow (a pipeline's stage, a pool)."""
    return np.dtype([(k, f"S{host_width}" if k == "host" else dt) for k, (dt, _) in COLUMNS.items()]
                    + list(extra))


def write_record(path: str, columns: dict[str, Sequence], errors: Sequence[tuple[str, str, str]],
                 attrs: dict[str, Any], texts: dict[str, Sequence[str]] | None = None) -> None:
    """A whole record by one process: /tasks from columns (those of COLUMNS left out get its
    fill value; ranks, 1 for a task that ran on a rank; any other column is added after them,
    with its array's dtype), /errors from one (type, message, traceback) per row, texts as
    UTF-8 datasets, attrs (plus mtcmpi_version, n_tasks, end_time, io_mode). Written to a
    temporary name and renamed when complete, so path is never half a file."""
    n = len(columns["status"])
    hosts = [h if isinstance(h, bytes) else str(h).encode() for h in columns.get("host", [b""] * n)]
    extra = [(name, np.asarray(values).dtype) for name, values in columns.items() if name not in COLUMNS]
    table = np.empty(n, log_dtype(max(map(len, hosts), default=1) or 1, extra))
    for name, (_, fill) in COLUMNS.items():
        table[name] = columns[name] if name in columns else fill
    table["host"] = hosts
    if "ranks" not in columns:
        table["ranks"] = table["rank"] >= 0
    for name, _ in extra:
        table[name] = columns[name]
    import h5py
    temporary = path + ".tmp"
    with h5py.File(temporary, "w") as f:
        f.create_dataset("tasks", data=table)
        for k, name in enumerate(FAILURE_TEXT):
            f.create_dataset(f"errors/{name}", data=np.array([e[k] for e in errors], dtype=TEXT))
        for name, values in (texts or {}).items():
            f.create_dataset(name, data=np.array(list(values), dtype=TEXT))
        f.attrs.update(mtcmpi_version=__version__, n_tasks=n, end_time=time.time(), io_mode="serial")
        f.attrs.update(attrs)
    os.replace(temporary, path)
