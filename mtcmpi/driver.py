"""`mtcmpi exec driver.py ARGS`: rank 0 runs a driver script, the other ranks serve its tasks.

The script runs as __main__ on rank 0 with sys.argv as `python driver.py ARGS` would set it;
the other ranks import it as __mp_main__ (as multiprocessing does), so functions defined in it
unpickle, and serve the mtcmpi.Executor it creates until it ends. The workers are stopped
whatever the script does, and every rank leaves with the script's exit status.
"""
from __future__ import annotations

import os
import sys
import types
from contextlib import contextmanager
from typing import Iterator

from mpi4py import MPI

from .errors import describe, say
from .futures import MAIN_ALIAS, drive_workers, work_for_executors
from .world import World


def run_script(path: str, argv: list[str], comm: MPI.Comm | None = None) -> int:
    """Collective: rank 0 runs the script as __main__ with sys.argv = [path, *argv]; the other
    ranks import it as __mp_main__ (so its functions unpickle) and serve until it ends.

    Returns the script's exit status on every rank: 0, its sys.exit code, or 1 if it raised
    (rank 0 prints the traceback). The workers are stopped whatever the script did.
    """
    world = World.of(comm)
    world.agree(None if os.path.isfile(path) else f"no such script: {path}")
    with script_environment(path, argv):
        if world.rank == 0:
            status = drive_workers(world.comm, lambda: run_main(path))
        else:
            import_on_worker(path, world.rank)
            work_for_executors(world.comm)
            status = None
    return world.comm.bcast(status, root=0)


@contextmanager
def script_environment(path: str, argv: list[str]) -> Iterator[None]:
    """sys.argv and sys.path as `python path argv` sets them; the main module restored after."""
    saved = sys.argv, sys.path[:], sys.modules["__main__"], sys.modules.get(MAIN_ALIAS)
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        yield
    finally:
        sys.argv, sys.path[:], sys.modules["__main__"] = saved[:3]
        sys.modules.pop(MAIN_ALIAS, None)
        if saved[3] is not None:
            sys.modules[MAIN_ALIAS] = saved[3]


def run_main(path: str) -> int:
    """Run the script; its exit status as `python path` would give it."""
    try:
        load_main(path, "__main__")
        return 0
    except SystemExit as exc:
        return exit_status(exc)
    except BaseException as exc:   # the script's frames only, as `python script.py` shows them
        print(describe(exc).traceback, end="", file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def import_on_worker(path: str, rank: int) -> None:
    """Import the driver script as __mp_main__; serving goes on if that fails (rank 1 says why,
    not every rank; the tasks that need the script's functions will fail and say so too)."""
    try:
        load_main(path, MAIN_ALIAS)
    except BaseException as exc:
        if rank == 1:
            say(f"mtcmpi exec: rank {rank} could not import {path} as {MAIN_ALIAS} (keep the "
                "driver code under `if __name__ == '__main__':`); tasks that need its functions "
                f"will fail:\n{describe(exc).traceback}")


def load_main(path: str, name: str) -> None:
    """Run a script file as the program's main module, called `name`, also known as __mp_main__."""
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules["__main__"] = sys.modules[MAIN_ALIAS] = module
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    exec(code, module.__dict__)


def exit_status(exc: SystemExit) -> int:
    """The process exit status Python gives a SystemExit (printing a non-integer code)."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    say(str(exc.code))
    return 1
