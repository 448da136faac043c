"""What an earlier, interrupted or finished, run of the same --out already did.

Rank 0 reads the results file if there is one, then the journal (newer, so it wins for a task
in both), and answers: which tasks are done, how often each was tried, and their rows.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import journal
from .store import Rows, read_rows, stack
from .tasklog import DONE, FAILED_STATES, members_text

META = "meta.json"


@dataclass
class Prior:
    """The state of an output before this run: rows done so far and the status of every task."""

    rows: Rows
    status: np.ndarray     # int8 per task id; NOT_RUN where nothing is known
    attempts: np.ndarray   # int16 per task id
    fingerprint: str | None

    def todo(self, retry_failed: bool) -> np.ndarray:
        """Ids still to run: never run, and failed ones too with retry_failed."""
        done = np.isin(self.status, DONE if retry_failed else DONE + FAILED_STATES)
        return np.flatnonzero(~done).astype(np.int64)


def read_meta(out: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(journal.directory(out), META)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_meta(out: str, meta: dict[str, Any]) -> None:
    os.makedirs(journal.directory(out), exist_ok=True)
    with open(os.path.join(journal.directory(out), META), "w") as f:
        json.dump(meta, f)


def load(out: str, n: int) -> Prior:
    """The prior state of `out` for a task list of n tasks (empty if there is none)."""
    status, attempts = np.zeros(n, np.int8), np.zeros(n, np.int16)
    rows, fingerprint = Rows.empty(), None
    if os.path.exists(out):
        attrs, rows, file_status = read_rows(out)
        fingerprint = str(attrs.get("fingerprint"))
        if len(file_status) == n:
            status[:] = file_status
            attempts[rows.ids] = rows.columns["attempts"]
    meta = read_meta(out)
    if meta:
        fingerprint = meta.get("fingerprint", fingerprint)
    newer = journal_rows(out)
    if len(newer.ids) and newer.ids.max() < n:
        rows = rows.without(newer.ids).merged(newer)
        status[newer.ids] = newer.columns["status"]
        attempts[newer.ids] = newer.columns["attempts"]
    return Prior(rows, status, attempts, fingerprint)


def journal_rows(out: str) -> Rows:
    """The journal's records as rows; a task journalled twice keeps its last record."""
    frames = list(journal.read(out))
    if not frames:
        return Rows.empty()
    ids = np.concatenate([np.frombuffer(fr["ids"], np.int64) for fr in frames])
    width = max(len(fr["host"].encode()) for fr in frames)
    cols = {"rank": np.concatenate([np.full(len(fr["ids"]), fr["rank"], np.int32) for fr in frames]),
            "pid": np.concatenate([np.full(len(fr["ids"]), fr["pid"], np.int64) for fr in frames]),
            "host": np.concatenate([np.full(len(fr["ids"]), fr["host"].encode(), f"S{width}") for fr in frames]),
            "start": np.concatenate([np.frombuffer(fr["starts"], np.float64) for fr in frames]),
            "end": np.concatenate([np.frombuffer(fr["ends"], np.float64) for fr in frames]),
            "status": np.concatenate([np.frombuffer(fr["status"], np.int8) for fr in frames]),
            "attempts": np.concatenate([[fr["attempts"].get(t, 0) + 1 for t in fr["ids"]] for fr in frames]).astype(np.int16),
            "ranks": np.concatenate([[len(fr["groups"][t][0]) if t in fr.get("groups", {}) else 1
                                      for t in fr["ids"]] for fr in frames]).astype(np.int16)}
    last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]   # last record of each id
    results, failures, groups = {}, {}, {}
    for fr in frames:
        for t in fr["ids"]:
            results.pop(t, None)
            failures.pop(t, None)
            groups.pop(t, None)
        results.update(fr["results"])
        failures.update(fr["failures"])
        groups.update({t: (members_text(m), ",".join(h)) for t, (m, h) in fr.get("groups", {}).items()})
    return Rows(ids[last], {k: v[last] for k, v in cols.items()}, stack(results), failures, groups)
