"""The per-task record of a pipeline run, written by rank 0 with plain h5py.

Same /tasks table as a results file (rank, host, pid, start, end, status enum, attempts) plus
a stage column (an index into the `stages` attribute), /task_ids ("stage:i"), /waited_for (the
task ids each task waited for, comma-separated) and /errors/{type, message, traceback}, so
`mtcmpi report` and `mtcmpi plot` read it. Built as <out>.tmp and renamed.
"""
from __future__ import annotations

import os
import time

import h5py
import numpy as np

from .. import __version__
from ..tasklog import STATUS_NAMES

CODES = {name: code for code, name in STATUS_NAMES.items()}


def write_record(path: str, rows: list[dict], stages: list[str], ranks: int, started: float,
                 command_line: str) -> None:
    """Write one row per task (dicts as the journal holds them) to path."""
    hosts = [str(r.get("host", "")).encode() for r in rows]
    table = np.zeros(len(rows), dtype=[
        ("rank", np.int32), ("host", f"S{max(map(len, hosts), default=1) or 1}"), ("pid", np.int64),
        ("start", np.float64), ("end", np.float64),
        ("status", h5py.enum_dtype(CODES, basetype="i1")), ("attempts", np.int16), ("stage", np.int16)])
    for i, row in enumerate(rows):
        table[i] = (row.get("rank", -1), hosts[i], row.get("pid", -1), row.get("start", np.nan),
                    row.get("end", np.nan), CODES[row["status"]], row.get("attempts", 0),
                    stages.index(row["stage"]))
    text = h5py.string_dtype("utf-8")
    with h5py.File(path + ".tmp", "w") as f:
        f["tasks"] = table
        f["task_ids"] = np.array([r["task"] for r in rows], dtype=text)
        f["waited_for"] = np.array([",".join(r.get("waits", [])) for r in rows], dtype=text)
        for key in ("type", "message", "traceback"):
            f[f"errors/{key}"] = np.array([r.get(key, "") for r in rows], dtype=text)
        f.attrs.update(mtcmpi_version=__version__, ranks=ranks, policy="dynamic (pipeline)", n_tasks=len(rows),
                       stages=stages, start_time=started, end_time=time.time(), command_line=command_line)
    os.replace(path + ".tmp", path)
