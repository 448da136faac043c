"""What earlier runs of a pipeline finished, and what that leaves to do (make-like).

The journal (<out>.journal) holds one JSON line per finished try, appended, flushed and fsynced
on rank 0 as each ends, so a kill at any moment loses nothing finished. A task is up to date
when the journal says it finished, its outputs still have the times recorded then, and no input
is newer: a half-written output of a killed task is never taken as done, and a rerun redoes
only what an edited input feeds.
"""
from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stages import Plan, Task


class Journal:
    """The finished tasks of every run of one pipeline output: JSON lines, the last one per
    task wins; appended, flushed and fsynced per task on rank 0."""

    def __init__(self, path: str, restart: bool):
        self.path, self.restart = path, restart
        self.last: dict[str, dict] = {}
        self.file = None               # opened on the first append: a dry run changes nothing
        self.lock = threading.Lock()
        if os.path.exists(path) and not restart:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self.last[entry["task"]] = entry
                    except (ValueError, KeyError):   # a line cut short by a kill
                        continue

    def append(self, entry: dict) -> None:
        """One task's end, on disk before this returns (any thread)."""
        with self.lock:
            if self.file is None:
                self.file = open(self.path, "w" if self.restart else "a", encoding="utf-8")
            self.last[entry["task"]] = entry
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())


def mtimes(paths: list[str]) -> dict[str, int] | None:
    """Modification times (ns) of paths, or None if one is missing."""
    try:
        return {p: os.stat(p).st_mtime_ns for p in paths}
    except OSError:
        return None


def up_to_date(task: Task, entry: dict | None) -> bool:
    """Finished by an earlier run, outputs untouched since, and no input newer than them."""
    if not entry or entry.get("status") != "ok":
        return False
    outs = mtimes(task.outputs)
    if outs is None or outs != entry.get("mtimes"):
        return False
    ins = mtimes(task.inputs)
    return ins is not None and max(ins.values(), default=0) <= min(outs.values(), default=0)


def decide(plan: Plan, journal: Journal, retry_failed: bool) -> dict[str, str]:
    """Per task: 'current' (skip), 'run', 'failed' (failed earlier; runs with --retry-failed)
    or 'blocked' (waits for a failed task)."""
    state: dict[str, str] = {}
    for tid in plan.order:
        task, entry = plan.tasks[tid], journal.last.get(tid)
        waits = {state[w] for w in task.waits}
        if waits & {"failed", "blocked"}:
            state[tid] = "blocked"
        elif "run" not in waits and up_to_date(task, entry):
            state[tid] = "current"
        elif entry and entry.get("status") in ("failed", "timeout") and not retry_failed and "run" not in waits:
            state[tid] = "failed"
        else:
            state[tid] = "run"
    return state
