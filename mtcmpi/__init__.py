"""mtcmpi: many-task computing on MPI — a master/worker engine with static and dynamic scheduling."""
__version__ = "0.1.0"

__all__ = ["run", "RunOptions", "TasksFailed", "Executor", "executor", "map", "load_pickled", "connect",
           "DependencyError", "functional", "schedule", "__version__"]
_FUTURES = {"Executor": "Executor", "executor": "executor", "map": "parallel_map"}


def __getattr__(name: str):
    """The API is imported on first use, so `python -m mtcmpi --help` never starts MPI. Each
    name is then kept as a plain attribute: resolving it again would try to start MPI again,
    a failed import of mpi4py each time on a machine without it (mtcmpi.map in a loop)."""
    value = globals()[name] = _resolve(name)
    return value


def _resolve(name: str):
    """What the public name `name` stands for, imported now."""
    if name in ("run", "TasksFailed") or name in _FUTURES:
        _start_mpi()
    if name in ("run", "TasksFailed"):
        from . import api
        return getattr(api, name)
    if name == "RunOptions":
        from .options import RunOptions
        return RunOptions
    if name == "load_pickled":
        from .output.hdf5 import load_pickled
        return load_pickled
    if name == "connect":   # pools a notebook drives: no MPI in this process
        from .pool.session import connect
        return connect
    if name in ("functional", "schedule"):   # Pydron-style sequential code, parallel calls
        from . import sequential
        return getattr(sequential, name)
    if name == "DependencyError":
        from .graph import DependencyError
        return DependencyError
    if name in _FUTURES:
        from . import futures
        return getattr(futures, _FUTURES[name])
    raise AttributeError(f"module 'mtcmpi' has no attribute {name!r}")


def _start_mpi() -> None:
    """Start MPI as `mtcmpi run` does (startup.start_mpi: its waits coarse on a full node, its
    time in the start-up profile), unless it is up already or there is no mpi4py (then
    mtcmpi.map runs its loop)."""
    from . import startup

    try:
        startup.start_mpi()
    except ImportError:
        pass
