"""mtcmpi.Executor (concurrent.futures over MPI ranks), mtcmpi.executor() and mtcmpi.map.

Rank 0 of a communicator drives: submit() and map() return real concurrent.futures.Future
objects, so wait(), as_completed(), done(), cancel() and result(timeout) behave as the standard
library documents. The other ranks serve: they run the tasks rank 0 sends until it tells them
to stop. Three ways to get there:

    mpirun -n N python -m mtcmpi exec driver.py ARGS   # rank 0 runs the script (driver.py)
    with mtcmpi.executor() as ex:                      # inside an SPMD program, on every rank:
        if ex is not None: ...                         # rank 0 drives, the others serve meanwhile
    mtcmpi.map(fn, items)                              # a loop of pure calls, made parallel

Functions and arguments travel by pickle, checked at submit(), so a lambda fails there with its
name rather than later on a worker. A task's exception is re-raised by result() as the original
type when it unpickles, with __cause__ a RemoteTraceback headed with the task's rank, host and
pid. With one rank the tasks run in a thread of the calling process, from the same pickled
calls (results are passed back as they are, not pickled).

Modules: pool (rank 0: the Executor and its dispatcher thread), dispatch (rank 0's loop with
workers), mapping (map()'s results), worker (the other ranks), calls (what travels between
them), values (rank 0's side of the values workers keep for dataflow calls), spmd
(executor(), map(), and `mtcmpi exec`'s hooks).
"""
from ..errors import RemoteError, RemoteTraceback
from .pool import Executor
from .spmd import (distributing, drive_workers, executor, executor_where_served, parallel_map,
                   workers_serve)
from .worker import work_for_executors

MAIN_ALIAS = "__mp_main__"   # the driver script's module on the workers, as multiprocessing names it

__all__ = ["Executor", "executor", "parallel_map", "RemoteError", "RemoteTraceback",
           "drive_workers", "work_for_executors", "MAIN_ALIAS", "distributing", "workers_serve",
           "executor_where_served"]
