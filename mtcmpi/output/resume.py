"""What an earlier, interrupted or finished, run of the same --out already did.

Rank 0 reads the results file if there is one, then the journal (newer, so it wins for a task
in both), and answers: which tasks are done and how often each was tried. Only the per-task
status and tries are held (3 bytes a task); the earlier rows themselves are streamed into the
new file block by block when it is written (assemble.py); rows that went straight into the
.tmp file stay there (direct.py).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from ..tasklog import DONE, FAILED_STATES
from . import hdf5, journal
from .values import Schema

META = "meta.json"


@dataclass
class Prior:
    """The state of an output before this run: the status and tries of every task, where the
    earlier rows are (a results file, journal files) and what their results looked like."""

    status: np.ndarray     # int8 per task id; NOT_RUN where nothing is known
    attempts: np.ndarray   # int16 per task id
    fingerprint: str | None
    file: str | None = None                              # an earlier complete results file
    journals: list[str] = field(default_factory=list)    # earlier runs' journal files, oldest first
    schema: Schema = field(default_factory=Schema)
    host_width: int = 1

    def todo(self, retry_failed: bool) -> np.ndarray | range:
        """Ids still to run: never run, and failed ones too with retry_failed (a range when
        that is all of them: 10^8 ids are then neither listed nor sent to every rank)."""
        if not self.status.any():
            return range(len(self.status))
        skip = np.zeros(256, bool)
        skip[DONE if retry_failed else DONE + FAILED_STATES] = True
        return np.flatnonzero(~skip[self.status.view(np.uint8)]).astype(np.int64)


def read_meta(out: str) -> dict | None:
    try:
        with open(os.path.join(journal.directory(out), META)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_meta(out: str, meta: dict) -> None:
    os.makedirs(journal.directory(out), exist_ok=True)
    with open(os.path.join(journal.directory(out), META), "w") as f:
        json.dump(meta, f)


def load(out: str, n: int, fingerprint: str, file_kept: bool = True) -> Prior:
    """The prior state of `out` for this task list of n tasks (empty if there is none);
    UsageError if it belongs to another task list or is not mtcmpi's. file_kept: whether the
    .tmp file that journalled rows went into is there (else those tasks run again)."""
    prior = Prior(np.zeros(n, np.int8), np.zeros(n, np.int16), None)
    if os.path.lexists(out):
        attrs = hdf5.read_state(out, prior)
        prior.fingerprint, prior.file = str(attrs.get("fingerprint")), out
        if prior.fingerprint != fingerprint or attrs.get("n_tasks") != n:
            raise different(out)
    meta = read_meta(out)
    if meta and meta.get("fingerprint") != fingerprint:
        raise different(out)
    prior.journals = journal.files(out)
    for path in prior.journals:
        for frame in journal.frames(path, fingerprint, out):
            frame = frame if file_kept else frame.without_file_rows()
            ids, m = frame.ids, frame.meta
            if len(ids) and ids.max() >= n:
                raise different(out)
            prior.status[ids] = np.frombuffer(m["status"], np.int8)
            prior.attempts[ids] = [m["attempts"].get(int(t), 0) + 1 for t in ids]
            prior.host_width = max(prior.host_width, len(m["host"].encode()))
            for key, dtype, shape, gids, _ in frame.groups():
                prior.schema.add(key, dtype, shape, int(gids.min()))
        prior.fingerprint = fingerprint
    return prior


def different(out: str) -> UsageError:
    return UsageError(f"--out {out} holds results of a different task list (target or arguments "
                      "changed); pass --restart to start over, or use another --out")
