"""The per-task record of a session (`connect(out=...)`): the /tasks table of a results file.

Written by output/layout.py's writer, in the layout of `run --out` (rank, host, pid, start, end,
status enum, attempts, ranks, plus the pool), with /errors texts, so `mtcmpi report` and
`mtcmpi plot` read it as they read a results file. Rank numbers count the workers of every
pool in the order they joined.

While the session runs, finished tasks are appended to OUT.journal (JSON lines, flushed and
fsynced every FLUSH_S seconds by the session's I/O thread), so a notebook that dies loses at
most the last FLUSH_S seconds of its record. At shutdown the HDF5 file is written (to a
temporary name, renamed when complete) and the journal removed. A journal whose session died
is turned into OUT by the next connect(out=OUT), and that session's record goes on after it
in the same file (its task numbers, ranks and pools follow the recovered ones).
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time

import numpy as np

from ..tasklog import NOT_RUN
from .connection import SessionError

log = logging.getLogger("mtcmpi.pool")
FIELDS = ("rank", "host", "pid", "start", "end", "status", "attempts", "pool")   # a row's, in order
NO_ROW = (-1, b"", -1, np.nan, np.nan, NOT_RUN, 0, -1)
NO_ERROR = ("", "", "")
FLUSH_S = 2.0   # seconds between journal flushes: what a dead notebook can lose of its record


class Record:
    """Rows by task number (submission order); journaled as they come, written at the end."""

    def __init__(self, path: str):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.journal = self.path + ".journal"
        self.started = time.time()
        self.rows: dict[int, tuple] = {}
        self.errors: dict[int, tuple[str, str, str]] = {}
        self.earlier = recover(self.path, self.journal)   # a dead session's rows, or None
        self.lines: list[str] = [json.dumps({"host": platform.node(), "pid": os.getpid(),
                                             "started": self.started})]
        self.submitted = self.flushed_submitted = 0
        self.flushed = time.monotonic()
        self.file = None

    def add(self, task: int, meta: tuple, status: int, error: tuple[str, str, str] | None) -> None:
        """meta as the session sends it: (pool, rank, host, pid, start, end, attempts)."""
        pool, rank, host, pid, start, end, attempts = meta
        self.rows[task] = (rank, host.encode(), pid, start, end, status, attempts, pool)
        if error is not None:
            self.errors[task] = error
        self.lines.append(json.dumps([task, *meta, status, error]))

    def flush(self, submitted: int, force: bool = False) -> None:
        """Append what finished since the last flush to the journal, at most every FLUSH_S
        seconds (unless forced); submitted: tasks submitted so far."""
        if not force and time.monotonic() - self.flushed < FLUSH_S:
            return
        self.flushed = time.monotonic()
        if submitted != self.flushed_submitted:
            self.lines.append(json.dumps({"submitted": submitted}))
            self.flushed_submitted = submitted
        if not self.lines[self.file is None:]:   # nothing new (the header alone is not worth a file)
            return
        if self.file is None:
            self.file = open(self.journal, "a", encoding="utf-8")
        self.file.write("".join(line + "\n" for line in self.lines))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.lines = []

    def write(self, n_tasks: int, address: str) -> None:
        """The HDF5 record (the recovered one, then this session's n_tasks), then no journal."""
        rows = [self.rows.get(i, NO_ROW) for i in range(n_tasks)]
        errors = [self.errors.get(i, NO_ERROR) for i in range(n_tasks)]
        started, sessions = self.started, 1
        if self.earlier is not None:
            rows, errors = follow(self.earlier, rows, errors)
            started, sessions = self.earlier["start_time"], self.earlier["sessions"] + 1
        write_file(self.path, rows, errors, started, sessions,
                   f"mtcmpi.connect() session at {address}")
        if self.file is not None:
            self.file.close()
        if os.path.exists(self.journal):
            os.remove(self.journal)


def recover(path: str, journal: str) -> dict | None:
    """If a session died leaving journal, write its record to path and return it (rows,
    errors, start_time, sessions); None if there is no journal."""
    if not os.path.exists(journal):
        return None
    with open(journal, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.endswith("\n")]   # a torn last line is dropped
    header, rows, errors, submitted = lines[0], {}, {}, 0
    if header["host"] == platform.node() and alive(header["pid"]):
        raise SessionError(f"{path} is the record of the live session of pid {header['pid']} (its "
                           f"journal {journal} is open): give this session another out=")
    for line in lines[1:]:
        if isinstance(line, dict):
            submitted = max(submitted, line["submitted"])
            continue
        task, pool, rank, host, pid, start, end, attempts, status, error = line
        rows[task] = (rank, host.encode(), pid, start, end, status, attempts, pool)
        if error is not None:
            errors[task] = tuple(error)
    n_tasks = max(submitted, max(rows, default=-1) + 1)
    earlier = {"rows": [rows.get(i, NO_ROW) for i in range(n_tasks)],
               "errors": [errors.get(i, NO_ERROR) for i in range(n_tasks)],
               "start_time": header["started"], "sessions": 1}
    write_file(path, earlier["rows"], earlier["errors"], header["started"], 1,
               f"mtcmpi.connect() session of pid {header['pid']} on {header['host']} (recovered)")
    os.remove(journal)
    log.warning("mtcmpi: the session of pid %s on %s ended without shutdown: its record (%d tasks, "
                "%d finished) is in %s; this session's record follows it there", header["pid"],
                header["host"], n_tasks, len(rows), path)
    return earlier


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except PermissionError:
        return True
    except OSError:
        return False


def follow(earlier: dict, rows: list[tuple], errors: list) -> tuple[list[tuple], list]:
    """earlier's rows, then rows with their ranks and pools numbered after earlier's."""
    rank0 = max((r[0] for r in earlier["rows"]), default=-1) + 1
    pool0 = max((r[7] for r in earlier["rows"]), default=-1) + 1
    moved = [r if r[7] < 0 else (r[0] + rank0, *r[1:7], r[7] + pool0) for r in rows]
    return earlier["rows"] + moved, earlier["errors"] + errors


def write_file(path: str, rows: list[tuple], errors: list, started: float, sessions: int,
               command_line: str) -> None:
    """The /tasks table (with a pool column) and /errors texts, by output/layout.py's writer."""
    from ..output.layout import write_record   # h5py: only when a session writes its record

    columns = {name: [r[i] for r in rows] for i, name in enumerate(FIELDS)}
    columns["pool"] = np.array(columns["pool"], np.int16)
    write_record(path, columns, errors,
                 dict(ranks=max((r[0] for r in rows), default=-1) + 1, policy="pool", start_time=started,
                      command_line=command_line, sessions=sessions,
                      pools=len({r[7] for r in rows if r[7] >= 0})))
