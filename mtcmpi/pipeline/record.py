"""The per-task record of a pipeline run, written by rank 0 (output/layout.py's writer).

The /tasks table of a results file (rank, host, pid, start, end, status, attempts, ranks) plus
a stage column (an index into the `stages` attribute), /task_ids ("stage:i"), /waited_for (the
task ids each task waited for, comma-separated) and /errors/{type, message, traceback}, so
`mtcmpi report` and `mtcmpi plot` read it as they read a results file.
"""
from __future__ import annotations

import numpy as np

from ..output.layout import FAILURE_TEXT, write_record as write_layout
from ..tasklog import STATUS_NAMES

CODES = {name: code for code, name in STATUS_NAMES.items()}
FIELDS = {"rank": -1, "host": "", "pid": -1, "start": np.nan, "end": np.nan, "attempts": 0}


def write_record(path: str, rows: list[dict], stages: list[str], ranks: int, started: float,
                 command_line: str) -> None:
    """Write one row per task (dicts as the journal holds them) to path."""
    columns = {name: [row.get(name, empty) for row in rows] for name, empty in FIELDS.items()}
    columns["status"] = [CODES[row["status"]] for row in rows]
    columns["stage"] = np.array([stages.index(row["stage"]) for row in rows], np.int16)
    write_layout(path, columns, [tuple(row.get(k, "") for k in FAILURE_TEXT) for row in rows],
                 dict(ranks=ranks, policy="dynamic (pipeline)", stages=stages, start_time=started,
                      command_line=command_line),
                 {"task_ids": [row["task"] for row in rows],
                  "waited_for": [",".join(row.get("waits", [])) for row in rows]})
