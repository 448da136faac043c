"""The durable record of finished tasks while a run is going: one append-only file per rank.

A background thread appends what the rank finished since the last flush every `interval`
seconds, so a task that finished just before a 30-second one started is still on disk within
seconds. Each flush is one frame (length, then a pickle of the batch); after a kill -9 the last
frame may be cut short, and reading stops there. The files live in `<out>.journal/` until the
results file exists. Pickle is fine here: the journal is mtcmpi's own scratch, never the output.
"""
from __future__ import annotations

import glob
import os
import pickle
import struct
import threading
import time
from typing import Iterator

from .tasklog import TaskLog

FRAME = struct.Struct("<Q")


def directory(out: str) -> str:
    """Where the journal of results file `out` lives."""
    return out + ".journal"


class Journal:
    """This rank's journal file; flush() appends the records of `log` not yet written."""

    def __init__(self, out: str, log: TaskLog, run_id: str, attempts: dict[int, int] | None = None):
        self.path = os.path.join(directory(out), f"rank{log.rank:05d}-{run_id}.jnl")
        self.file = open(self.path, "ab", buffering=0)
        self.log, self.attempts = log, attempts or {}
        self.written = 0
        self.lock = threading.Lock()

    def flush(self) -> None:
        """Append one frame with every record completed since the last flush."""
        with self.lock:
            log, lo = self.log, self.written
            flushed = time.time()   # before hi: every task recorded by now is in this frame
            hi = len(log.ends)   # ends is appended last, so every record below hi is complete
            if hi == lo:
                return
            ids = log.ids[lo:hi]
            batch = {"rank": log.rank, "host": log.host, "pid": log.pid, "flushed": flushed,
                     "ids": ids, "starts": log.starts[lo:hi], "ends": log.ends[lo:hi],
                     "status": log.status[lo:hi],
                     "attempts": {t: self.attempts[t] for t in ids if t in self.attempts},
                     "results": {t: log.results[t] for t in ids if t in log.results},
                     "failures": {t: log.failures[t] for t in ids if t in log.failures},
                     "groups": {t: log.groups[t] for t in ids if t in log.groups}}
            data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
            self.file.write(FRAME.pack(len(data)) + data)
            self.written = hi

    def close(self) -> None:
        self.flush()
        self.file.close()


class Flusher(threading.Thread):
    """Flushes a journal every `interval` seconds until stopped, then once more."""

    def __init__(self, journal: Journal, interval: float):
        super().__init__(name="mtcmpi-journal", daemon=True)
        self.journal, self.interval = journal, interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.journal.flush()

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.journal.close()


def exists(out: str) -> bool:
    """Whether `out` has journal files (an earlier run was interrupted)."""
    return bool(glob.glob(os.path.join(directory(out), "*.jnl")))


def read(out: str) -> Iterator[dict]:
    """Every complete frame of every journal file of `out`, oldest files first."""
    for path in sorted(glob.glob(os.path.join(directory(out), "*.jnl")), key=os.path.getmtime):
        with open(path, "rb") as f:
            while True:
                head = f.read(FRAME.size)
                if len(head) < FRAME.size:
                    break
                data = f.read(FRAME.unpack(head)[0])
                if len(data) < FRAME.unpack(head)[0]:
                    break   # cut short by a kill: everything before it counts
                try:
                    yield pickle.loads(data)
                except Exception:   # a torn frame's bytes may not unpickle: stop at it too
                    break
