"""mtcmpi: many-task computing on MPI — a master/worker engine with static and dynamic scheduling."""
__version__ = "0.1.0"

__all__ = ["run", "TasksFailed", "Executor", "executor", "map", "load_pickled", "DependencyError",
           "functional", "schedule", "__version__"]
from .functional import functional, schedule  # noqa: E402  (cheap; the names shadow the module's)
_FUTURES = {"Executor": "Executor", "executor": "executor", "map": "parallel_map"}


def __getattr__(name: str):
    """The API is imported on first use, so `python -m mtcmpi --help` never starts MPI."""
    if name in ("run", "TasksFailed"):
        from . import api
        return getattr(api, name)
    if name == "load_pickled":
        from .store import load_pickled
        return load_pickled
    if name == "DependencyError":
        from .graph import DependencyError
        return DependencyError
    if name in _FUTURES:
        from . import futures
        return getattr(futures, _FUTURES[name])
    raise AttributeError(f"module 'mtcmpi' has no attribute {name!r}")
