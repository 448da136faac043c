"""--out: the results file of a run, its journal while the run goes on, and resume.

begin() (collective, before the engine) checks the output path, reads what an earlier run of
the same output did and agrees which tasks remain; wrap() turns every result into arrays and
journals them (numeric rows straight into results.h5.tmp, direct.py); finish() (collective,
after the engine) completes that file from the journals and renames it into place. Every path is made absolute at start-up: a task may chdir.
"""
from __future__ import annotations

import os
import pickle
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mpi4py import MPI

from .. import __version__
from ..errors import UsageError
from ..tasklog import FAILED_STATES, TaskLog
from ..tasks import plain_ids
from ..world import World
from . import journal
from .values import Column, Normalizer, Schema, row_bytes

if TYPE_CHECKING:   # imported where used: a worker whose tasks return plain numbers and strings
    import numpy as np   # loads no numpy before its tasks are done (values.Plain)

    from . import assemble, hdf5, resume

CHUNK_BYTES = 1 << 20   # automatic chunk shape: about this many bytes of whole rows
WRITERS_VARIABLE = "MTCMPI_WRITERS"   # 'all': every rank writes its own rows (default: one per node)


class Output:
    """The --out options of one run, and what begin() learned. (A plain class, as every record
    each rank loads: see world.World.)"""

    def __init__(self, path: str, restart: bool = False, retry_failed: bool = False,
                 serial_io: bool = False, pickled: bool = False, flush_interval: float = 2.0,
                 compression: str | None = None, chunk_rows: int | None = None):
        if not path.strip():
            raise UsageError("--out needs a file name, e.g. --out results.h5")
        if path.endswith(os.sep) or os.path.isdir(path):
            raise UsageError(f"--out {path} is a directory: give a file name, e.g. {os.path.join(path, 'results.h5')}")
        self.path = os.path.abspath(path)
        self.restart, self.retry_failed, self.serial_io, self.pickled = restart, retry_failed, serial_io, pickled
        self.flush_interval = flush_interval
        self.compression = compression   # gzip, gzip:LEVEL or lzf
        self.chunk_rows = chunk_rows
        self.prior: resume.Prior | None = None   # rank 0 only
        self.attempts: dict[int, int] = {}       # tries before this run
        self.run_id = self.fingerprint = ""
        self.file_id = ""         # of the .tmp file that rows go into during the run (direct.py)
        self.file_kept = True     # rank 0: the .tmp that earlier runs wrote rows into is still there
        self.n = 0
        self.rewrite = True       # False when an earlier run finished everything: leave the file be
        self.flusher: journal.Flusher | None = None
        self.normalizer: Normalizer | None = None
        self.filters()   # refuse a bad --compression now
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise UsageError(f"--chunk-rows must be >= 1, not {self.chunk_rows}")

    def filters(self) -> dict[str, Any]:
        """create_dataset's arguments for --compression."""
        if self.compression is None:
            return {}
        name, _, level = self.compression.partition(":")
        if name == "lzf" and not level:
            return {"compression": "lzf"}
        if name == "gzip" and (not level or level.isdigit() and 0 <= int(level) <= 9):
            return {"compression": "gzip", "compression_opts": int(level or 4)}
        raise UsageError(f"--compression {self.compression!r}: use gzip, gzip:LEVEL (0-9) or lzf")

    def preload(self) -> None:
        """Rank 0: start importing h5py (and numpy, ~150 ms of CPU) in a thread, so that it
        overlaps the start-up agreement, where this rank mostly waits, instead of following
        it while every other rank waits. check() imports it for good (a failure tells there)."""
        import threading
        from importlib import import_module

        def load() -> None:
            try:
                import_module("h5py")
            except BaseException:   # noqa: BLE001 - check() imports it again and says why
                pass
        threading.Thread(target=load, name="mtcmpi-preload", daemon=True).start()

    def check(self) -> None:
        """Refuse at once what cannot work: h5py without MPI, a missing or read-only directory,
        compression that this parallel HDF5 cannot write."""
        import h5py

        if not h5py.get_config().mpi and not self.serial_io:
            raise UsageError("this h5py was built without MPI, so the ranks cannot write one file "
                             "together: rebuild it with MPI (scripts/setup does) or pass --serial-io")
        if self.compression and not self.serial_io and h5py.version.hdf5_version_tuple < (1, 10, 2):
            raise UsageError(f"--compression: parallel HDF5 {h5py.version.hdf5_version} cannot write "
                             "compressed datasets (1.10.2 and later can): drop it or pass --serial-io")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise UsageError(f"--out {self.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise UsageError(f"--out {self.path}: directory {parent} is not writable")
        where = journal.directory(self.path)
        if os.path.lexists(where) and not os.path.isdir(where):
            raise UsageError(f"--out {self.path}: {where} is in the way of its journal (not a "
                             "directory): move it away")

    def begin(self, world: World, n: int, fingerprint: str) -> Sequence[int]:
        """Collective: the ids this run must run (all of them, or what an earlier run left).
        Only rank 0 reads the earlier state, so one broadcast carries it, or its error."""
        error, todo = None, None
        if world.rank == 0:
            try:
                todo = plain_ids(self.load(n, fingerprint))
            except UsageError as exc:
                error = str(exc)
            except OSError as exc:
                error = f"--out {self.path}: {exc.strerror or exc} ({exc.filename or self.path})"
        world.barrier()   # the others sleep while rank 0 reads and settles the file (numpy too)
        error, self.run_id, self.attempts, self.rewrite, self.file_id, self.fingerprint, todo = world.comm.bcast(
            (error, self.run_id, self.attempts, self.rewrite, self.file_id, fingerprint, todo), root=0)
        if error:   # the fingerprint: only rank 0 saw the task list
            raise UsageError(error)
        self.n = n
        return todo

    def load(self, n: int, fingerprint: str) -> np.ndarray | range:
        """Rank 0: clear or read the earlier state, check it is of this task list, start the journal."""
        import shutil   # rank 0's alone: ~3 ms (it loads bz2 and lzma) no worker pays

        import numpy as np

        from . import direct, resume

        self.check()
        if self.restart:
            for stale in (self.path, self.path + ".tmp"):
                if os.path.lexists(stale):
                    shutil.rmtree(stale) if os.path.isdir(stale) and not os.path.islink(stale) else os.remove(stale)
            shutil.rmtree(journal.directory(self.path), ignore_errors=True)
        file_id = (resume.read_meta(self.path) or {}).get("file_id")
        self.file_kept = direct.usable(self.path, file_id)
        self.prior = resume.load(self.path, n, fingerprint, self.file_kept)
        if not self.file_kept:   # missing, unreadable or not the journal's: its rows run again
            direct.discard(self.path)
        self.file_id = file_id if self.file_kept else direct.new_id()
        todo = self.prior.todo(self.retry_failed)
        tried = np.flatnonzero(self.prior.attempts)
        tried = tried[np.isin(tried, todo)] if isinstance(todo, np.ndarray) else tried
        self.attempts = dict(zip(tried.tolist(), self.prior.attempts[tried].tolist()))
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self.rewrite = bool(len(todo)) or not os.path.exists(self.path) or journal.exists(self.path)
        if len(todo):
            resume.write_meta(self.path, {"fingerprint": fingerprint, "n_tasks": n, "file_id": self.file_id})
        return todo

    def earlier_failures(self, ran: Any) -> int:
        """Rank 0: tasks that failed in an earlier run and were not run again now."""
        if self.prior is None:
            return 0
        import numpy as np

        failed = np.isin(self.prior.status, FAILED_STATES)
        if not failed.any():
            return 0
        failed[np.asarray(ran, dtype=np.int64)] = False
        return int(failed.sum())

    def wrap(self, invoke: Callable[[Any], Any], log: TaskLog, stop: Any, todo: int) -> Callable[[Any], Any]:
        """invoke with its result turned into arrays inside the task (values.Normalizer) and
        journalled (a journal that cannot be written halts this rank through stop)."""
        normalize = self.normalizer = Normalizer(self.pickled)
        if not todo:
            return lambda payload: normalize(invoke(payload))
        contiguous = not (self.serial_io or self.compression or self.chunk_rows)
        jnl = journal.Journal(self.path, log, self.run_id, self.fingerprint, self.attempts, stop.halt,
                              self.direct_rows if contiguous else None)
        self.flusher = journal.Flusher(jnl, self.flush_interval)
        stop.listeners.append(self.flusher.wake)
        self.flusher.start()
        added = jnl.added

        def stored(payload: Any) -> Any:
            arrays = normalize(invoke(payload))
            added(arrays)
            return arrays
        return stored

    def direct_rows(self) -> Any:
        """The writer of this rank's rows straight into the .tmp file (made when a task returns
        an array: direct.py needs numpy)."""
        from . import direct

        return direct.DirectRows(self.path, self.n, self.file_id)

    def close(self) -> None:
        """The engine is done on this rank (or the job ends now): journal what is left."""
        if self.flusher and self.flusher.is_alive():
            self.flusher.stop()

    def finish(self, world: World, log: TaskLog, n: int, attrs: dict[str, Any],
               retried: dict[int, tuple[int, int]] | None = None,
               keys: np.ndarray | None = None) -> None:
        """Collective: build the file from every journal, then rename it into place. A worker
        hands its log and journal to its node's writer, which checks, merges and writes them:
        a worker whose tasks returned no arrays imports neither numpy nor h5py."""
        self.close()
        jnl = self.flusher.journal if self.flusher else None
        comm, rank = world.comm, world.rank
        # one gather and one broadcast where each step had its collective: on an oversubscribed
        # node every collective costs each rank a wake-up, most of the store's time on 64 ranks
        width = log.host_width(self.prior.host_width if self.prior else 1)
        parts = comm.gather((jnl.error if jnl else None, jnl.schema.seen if jnl else {}, width,
                             self.normalizer.pickled_keys if self.normalizer else set(), world.host), root=0)
        plan = self.plan([part[:4] for part in parts], n, attrs) if rank == 0 else None
        one_node = rank == 0 and len({part[4] for part in parts}) == 1
        world.barrier()   # the others sleep while rank 0 plans (it may have a file to settle)
        # columns travel pickled: only writers load them
        (error, columns, width, attrs), one_node = comm.bcast((plan, one_node), root=0)
        if error is not None:
            raise UsageError(error)
        if columns is None:   # an earlier run finished everything: the file stays as it is
            return
        group, writers = self.writers(world, one_node)   # a rank is its group's 0 iff it writes
        parts = group.gather(None if writers is not None else (log, jnl.path if jnl else None), root=0)
        taken = None   # writer: the tasks of each of its ranks whose result did not fit the rule
        failures, groups = {}, {}   # rank 0: every failure, every parallel task's members
        if writers is not None:
            import numpy as np

            from . import assemble, direct, hdf5

            columns = pickle.loads(columns)
            logs = [log] + [other for other, _ in parts[1:]]
            sources = assemble.Sources(self.fingerprint, ([jnl.path] if jnl else [])
                                       + [path for _, path in parts[1:] if path], file_kept=self.file_kept)
            mismatched = assemble.mismatches(sources.frames(False), columns)
            taken = [each.mark_failed(mismatched) for each in logs]
            prior_failed: dict = {}
            if self.prior:
                sources.prior_file, sources.prior_journals = self.prior.file, self.prior.journals
                prior_failed = assemble.mismatches(sources.frames(True), columns)
            rows = hdf5.Rows.merged([hdf5.Rows.of(each, width, self.attempts, retried) for each in logs])
            tries = None if retried is None else np.concatenate([hdf5.every_try(each, width) for each in logs])
            tmp = direct.tmp_path(self.path)
        mine = group.scatter(taken, root=0)
        if writers is None:
            log.mark_failed(mine)   # for this rank's summary, as its writer marked its rows
        alone = group == comm   # rank 0 writes every row: the failures and the errors are its own
        if alone and rank == 0:
            failures, groups = rows.failures, rows.groups
        elif not alone:
            for some_failures, some_groups in comm.gather((rows.failures, rows.groups) if writers is not None
                                                          else ({}, {}), root=0) or []:
                failures.update(some_failures)
                groups.update(some_groups)
        error = None
        if writers is not None:
            try:
                self.build(writers, tmp, n, sources, columns, rows, prior_failed, width, attrs, tries)
            except UsageError as exc:   # collective over the writers
                error = str(exc)
        for made in (group, writers):
            if made is not None and made != comm and made != MPI.COMM_SELF:
                made.Free()   # made by writers() for this finish
        if not alone:
            world.agree(error)   # every writer is done (or one failed) before rank 0 ends the file
        if rank == 0 and error is None:
            try:
                direct.require(tmp, n * (len(hdf5.FAILURE_TEXT) * 16 + 8)
                               + sum(len(x.message) + len(x.traceback) + len(x.type) for x in failures.values()))
                assemble.texts(tmp, n, sources, failures, prior_failed, keys)
                assemble.groups_table(tmp, sources, groups)
                os.replace(tmp, self.path)
                import shutil

                shutil.rmtree(journal.directory(self.path), ignore_errors=True)
            except (OSError, RuntimeError) as exc:
                error = self.unwritable(exc)
        world.agree(error)   # every rank waits for rank 0's rename here

    def plan(self, parts: list[tuple], n: int, attrs: dict[str, Any]) -> tuple:
        """Rank 0, from every rank's (journal error, schema, host width, pickled keys): (error,
        columns, width, attrs) for all; the first rank's journal error, or the file's space
        and earlier state checked; columns None when the file is to stay as it is."""
        errors = [e for e, _, _, _ in parts if e]
        if errors:
            return errors[0], None, 0, {}
        if not self.rewrite:
            return None, None, 0, {}
        schema = Schema()
        for seen in [seen for _, seen, _, _ in parts] + ([self.prior.schema.seen] if self.prior else []):
            other = Schema()
            other.seen = seen
            schema.merge(other)
        columns, width = schema.columns(), max(w for _, _, w, _ in parts)
        from . import assemble, direct

        try:
            direct.require(self.path, self.space(n, columns, width))
            direct.settle(self.path, columns)
        except (OSError, RuntimeError) as exc:
            return self.unwritable(exc), None, 0, {}
        pickled = set().union(*(keys for _, _, _, keys in parts))
        attrs = dict(attrs, mtcmpi_version=__version__, mpi_library=MPI.Get_library_version().strip("\0\n "),
                     command_line=command_line(), end_time=time.time())
        return (None, pickle.dumps(columns, protocol=pickle.HIGHEST_PROTOCOL), width,
                assemble.attrs_of(columns, pickled, self.serial_io, attrs))

    def writers(self, world: World, one_node: bool) -> tuple[MPI.Comm, MPI.Comm | None]:
        """(group, writers): the ranks whose rows one rank writes, it first (the whole job with
        --serial-io, else each node, or each rank alone with MTCMPI_WRITERS=all), and the
        communicator of the writing ranks (None on the others). One writer per node: a
        collective open and write by every rank costs more than it brings (every rank imports
        h5py and MPI-IO), and a node's journals are read at the speed of its one link anyway.
        A job on one node (every rank named the same host) needs no communicator made: the
        two splits were a fifth of the store's time on 64 ranks."""
        comm = world.comm
        if os.environ.get(WRITERS_VARIABLE, "node") == "all" and not self.serial_io:
            return MPI.COMM_SELF, comm
        if self.serial_io or one_node:
            return comm, MPI.COMM_SELF if world.rank == 0 else None
        group = comm.Split_type(MPI.COMM_TYPE_SHARED, key=world.rank)
        first = group.Get_rank() == 0
        writers = comm.Split(0 if first else MPI.UNDEFINED, key=world.rank)
        return group, writers if first else None

    def build(self, comm: MPI.Comm, tmp: str, n: int, sources: assemble.Sources,
              columns: dict[str, Column], rows: hdf5.Rows, prior_failed: dict, width: int,
              attrs: dict[str, Any], tries: np.ndarray | None) -> None:
        """Write the parallel part of the file (collective over comm); one line on every rank
        if it cannot be written (a full disk), the journal and the .tmp file left in place."""
        import h5py

        from . import assemble, hdf5

        parallel = comm.Get_size() > 1   # one writer (one node, --serial-io): no MPI-IO to start
        filters = self.filters()
        writer = hdf5.Writer(comm, bool(filters) and parallel, parallel)
        f, error, failed = None, None, False

        def made() -> None:
            nonlocal f
            f = (h5py.File(hdf5.mpio_name(tmp), "a", driver="mpio", comm=comm) if parallel
                 else h5py.File(tmp, "a"))
            hdf5.create(f, n, width, columns, attrs, self.chunks, filters)

        def written() -> None:
            assemble.write(f, writer, n, sources, columns, rows, prior_failed, width)
            if tries is not None:
                hdf5.write_tries(f, writer, tries)

        for step in (made, written):   # all ranks agree after each collective step
            try:
                step()
            except hdf5.PeerFailed:
                failed = True
            except (OSError, RuntimeError) as exc:
                error = self.unwritable(exc)
            if comm.allreduce(failed or error is not None, op=MPI.LOR):
                failed = True
                break
        try:
            if f is not None:
                f.close()   # collective: every rank comes here, failed or not
        except (OSError, RuntimeError) as exc:
            error = error or self.unwritable(exc)
        World.of(comm).agree(error)   # the message of the lowest rank that had one
        if failed:
            raise UsageError(self.unwritable(OSError("see the other ranks")))

    def space(self, n: int, columns: dict[str, Column], width: int) -> int:
        """Bytes the file still needs, at most: the log and the rows not written during the run
        (compressed ones too, as if they did not compress: Open MPI's OMPIO was seen to drop a
        collective write on a full disk without an error, so the space is checked first)."""
        from . import direct, hdf5

        made = direct.layout(self.path)
        rows = sum(n * row_bytes(col.dtype, col.shape)
                   for key, col in columns.items() if key not in made)
        return direct.holes(self.path) + rows + n * hdf5.log_dtype(width).itemsize

    def chunks(self, col: Column) -> tuple | None:
        """The chunk shape of /results/<key>: --chunk-rows rows, or about CHUNK_BYTES of rows
        when compressed; contiguous otherwise."""
        if self.chunk_rows is None and not self.compression:
            return None
        row = max(1, row_bytes(col.dtype, col.shape))
        return (self.chunk_rows or max(1, CHUNK_BYTES // row),) + col.shape

    def unwritable(self, exc: Exception) -> str:
        """The one line for a results file that cannot be written (HDF5's own text spans lines)."""
        errno = getattr(exc, "errno", None)
        why = os.strerror(errno) if errno else str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return (f"--out {self.path}: the results file cannot be written ({why}); "
                "nothing is lost, the journal keeps every finished task: once there is space "
                "(or the cause is fixed), run the same command again")


def command_line() -> str:
    """How this process was started, as a user would type it (rank 0)."""
    import shlex
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("mtcmpi", "__main__.py")):
        argv[0:1] = ["python", "-m", "mtcmpi"]
    return shlex.join(argv)
