"""--out: the results file of a run, its journal while the run goes on, and resume.

begin() (collective, before the engine) checks the output path, reads what an earlier run of
the same output did and agrees which tasks remain; journal() keeps this rank's finished tasks
on disk; finish() (collective, after the engine) builds the file and renames it into place.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

from . import __version__, journal
from .errors import UsageError
from .tasklog import FAILED_STATES, TaskLog
from .world import World

if TYPE_CHECKING:   # numpy and h5py (resume, store) only where used: not at a rank's start-up
    import numpy as np

    from . import resume


@dataclass
class Output:
    """The --out options of one run, and what begin() learned."""

    path: str
    restart: bool = False
    retry_failed: bool = False
    serial_io: bool = False
    pickled: bool = False
    flush_interval: float = 2.0
    prior: resume.Prior | None = field(default=None, repr=False)   # rank 0 only
    attempts: dict[int, int] = field(default_factory=dict)        # tries before this run
    run_id: str = ""
    rewrite: bool = True    # False when an earlier run finished everything: leave the file be

    def check(self) -> None:
        """Refuse at once what cannot work: h5py without MPI, a missing or read-only directory."""
        import h5py

        if not h5py.get_config().mpi and not self.serial_io:
            raise UsageError("this h5py was built without MPI, so the ranks cannot write one file "
                             "together: rebuild it with MPI (scripts/setup does) or pass --serial-io")
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise UsageError(f"--out {self.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise UsageError(f"--out {self.path}: directory {parent} is not writable")

    def begin(self, world: World, n: int, fingerprint: str) -> np.ndarray | range:
        """Collective: the ids this run must run (all of them, or what an earlier run left)."""
        error, todo = None, None
        if world.rank == 0:
            try:
                todo = self.load(n, fingerprint)
            except UsageError as exc:
                error = str(exc)
        world.agree(error)
        self.run_id, self.attempts, self.rewrite = world.comm.bcast(
            (self.run_id, self.attempts, self.rewrite), root=0)
        everything = todo is not None and len(todo) == n   # ids are unique: all of 0..n-1
        return world.comm.bcast(range(n) if everything else todo, root=0)   # a range needs no numpy

    def load(self, n: int, fingerprint: str) -> np.ndarray:
        """Rank 0: clear or read the earlier state, check it is of this task list, start the journal."""
        self.check()
        if self.restart:
            for stale in (self.path, self.path + ".tmp"):
                if os.path.exists(stale):
                    os.remove(stale)
            shutil.rmtree(journal.directory(self.path), ignore_errors=True)
        from . import resume

        self.prior = resume.load(self.path, n)
        if self.prior.fingerprint not in (None, fingerprint):
            raise UsageError(f"--out {self.path} holds results of a different task list (target or "
                             "arguments changed); pass --restart to start over, or use another --out")
        todo = self.prior.todo(self.retry_failed)
        self.attempts = {int(t): int(self.prior.attempts[t]) for t in todo if self.prior.attempts[t]}
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self.rewrite = bool(len(todo)) or not os.path.exists(self.path) or journal.exists(self.path)
        if len(todo):
            resume.write_meta(self.path, {"fingerprint": fingerprint, "n_tasks": n})
        return todo

    def earlier_failures(self, ran: Any) -> int:
        """Rank 0: tasks that failed in an earlier run and were not run again now."""
        if self.prior is None:
            return 0
        import numpy as np

        failed = np.isin(self.prior.status, FAILED_STATES)
        failed[np.asarray(ran, dtype=np.int64)] = False
        return int(failed.sum())

    def journal(self, log: TaskLog) -> journal.Flusher:
        """Start journalling this rank's finished tasks."""
        flusher = journal.Flusher(journal.Journal(self.path, log, self.run_id, self.attempts),
                                  self.flush_interval)
        flusher.start()
        return flusher

    def finish(self, world: World, log: TaskLog, n: int, attrs: dict[str, Any],
               pickled_keys: set[str], retried: dict[int, tuple[int, int]] | None = None,
               keys: np.ndarray | None = None) -> None:
        """Collective: write every row (this run's and, on rank 0, the earlier ones) and the
        task keys (rank 0), then rename."""
        if not self.rewrite:
            return
        from . import store

        rows = store.Rows.of(log, self.attempts, retried)
        if world.rank == 0:
            rows = self.prior.rows.without(rows.ids).merged(rows) if self.prior else rows
        attrs = world.comm.bcast(dict(attrs, mtcmpi_version=__version__,
                                      mpi_library=MPI.Get_library_version().strip("\0\n "),
                                      command_line=command_line(), end_time=time.time()), root=0)
        tmp = self.path + ".tmp"
        tries = None if retried is None else store.every_try(log)
        store.write(world, tmp, n, rows, attrs, self.serial_io, pickled_keys, tries, keys)
        if world.rank == 0:
            os.replace(tmp, self.path)
            shutil.rmtree(journal.directory(self.path), ignore_errors=True)
        world.barrier()


def command_line() -> str:
    """How this process was started, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("mtcmpi", "__main__.py")):
        argv[0:1] = ["python", "-m", "mtcmpi"]
    return shlex.join(argv)
