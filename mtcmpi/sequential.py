"""Pydron-style parallelism: sequential code whose pure calls run in parallel.

    @mtcmpi.functional
    def process(item): ...            # a pure function, defined at module level

    @mtcmpi.schedule
    def main(inputs):
        return [process(x) for x in inputs]     # the calls run at once on the other ranks

Inside a schedule (on rank 0 under `mpirun ... python -m mtcmpi exec`, or called on every rank
of an SPMD program), a functional call is submitted to an mtcmpi.Executor and returns a Pending
value at once; a Pending passed to another functional call becomes a dataflow edge (mtcmpi.graph),
and any other use of it (arithmetic, `if`, printing, indexing, attributes) waits for its value,
so the code stays correct. What a schedule returns (also inside lists, tuples, dicts) is resolved
before it returns. Without mpi4py, with one rank, or inside a task, calls simply run in order.
"""
from __future__ import annotations

import functools
import operator
import pickle
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .errors import exception_line

if TYPE_CHECKING:   # not imported at run time: `import mtcmpi` stays instant
    from concurrent.futures import Executor, Future

F = TypeVar("F", bound=Callable[..., Any])
_current: ContextVar[Executor | None] = ContextVar("mtcmpi_schedule", default=None)


class Pending:
    """The value of a functional call that may still run: every use but passing it to another
    functional call waits for it and acts on the value (a transparent proxy)."""

    __slots__ = ("_future",)

    def __init__(self, future: Future):
        object.__setattr__(self, "_future", future)

    def __getattr__(self, name: str) -> Any:
        return getattr(value(self), name)

    def __setattr__(self, name: str, new: Any) -> None:
        setattr(value(self), name, new)

    def __delattr__(self, name: str) -> None:
        delattr(value(self), name)

    @property
    def __class__(self) -> type:   # isinstance(p, list) asks the value
        return type(value(self))

    def __reduce_ex__(self, protocol: int) -> Any:   # pickles (and copies) as its value
        return value(self).__reduce_ex__(protocol)

    def __format__(self, spec: str) -> str:
        return format(value(self), spec)


def value(item: Any) -> Any:
    """The value of a Pending (waiting for it), or item itself."""
    return object.__getattribute__(item, "_future").result() if type(item) is Pending else item


def _forward(function: Callable) -> Callable:
    def method(self: Pending, *args: Any) -> Any:
        return function(value(self), *map(value, args))
    return method


def _reflect(function: Callable) -> Callable:
    def method(self: Pending, other: Any) -> Any:
        return function(value(other), value(self))
    return method


_BINARY = ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift",
           "and", "xor", "or")
_PLAIN = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
          "gt": operator.gt, "ge": operator.ge, "neg": operator.neg, "pos": operator.pos,
          "invert": operator.invert, "abs": abs, "index": operator.index, "bool": bool, "int": int,
          "float": float, "complex": complex, "str": str, "repr": repr, "bytes": bytes,
          "hash": hash, "len": len, "iter": iter, "reversed": reversed, "round": round,
          "getitem": operator.getitem, "setitem": operator.setitem, "delitem": operator.delitem,
          "contains": operator.contains, "call": lambda f, *a, **k: f(*a, **k), "divmod": divmod,
          "array": lambda v, *a, **k: __import__("numpy").asarray(v, *a, **k)}
for _name in _BINARY:
    _op = getattr(operator, f"{_name}_" if _name in ("and", "or") else _name)
    setattr(Pending, f"__{_name}__", _forward(_op))
    setattr(Pending, f"__r{_name}__", _reflect(_op))
for _name, _op in _PLAIN.items():
    setattr(Pending, f"__{_name}__", _forward(_op))
Pending.__call__ = lambda self, *args, **kwargs: value(self)(*args, **kwargs)   # noqa: E731
Pending.__rdivmod__ = _reflect(divmod)


def replaced(item: Any, pending: Callable[[Pending], Any]) -> Any:
    """item with every Pending (also in lists, tuples, dicts) replaced by pending(it)."""
    if type(item) is Pending:
        return pending(item)
    if type(item) in (list, tuple):
        return type(item)(replaced(x, pending) for x in item)
    if type(item) is dict:
        return {k: replaced(v, pending) for k, v in item.items()}
    return item


def futures_for(item: Any) -> Any:
    """item with every Pending replaced by its Future: the dataflow edges of a functional call."""
    return replaced(item, lambda p: object.__getattribute__(p, "_future"))


def resolved(item: Any) -> Any:
    """item with every Pending (also in lists, tuples, dicts) replaced by its value."""
    return replaced(item, value)


def functional(fn: F) -> F:
    """Mark fn as pure: inside a schedule its calls run in parallel and return Pending values.
    Define it at module level (it travels to the workers by name)."""
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        ex = _current.get()
        if ex is None:
            return fn(*resolved(args), **resolved(kwargs))
        return Pending(ex.submit(call, *futures_for(args), **futures_for(kwargs)))
    return call   # type: ignore[return-value]


def schedule(fn: F) -> F:
    """Run fn with its functional calls in parallel over the ranks; same results as in order.

    Collective in an SPMD program (every rank calls it and gets the result); under `mtcmpi
    exec`, or inside `with mtcmpi.executor() as ex`, rank 0 alone calls it.
    """
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        world = None if _current.get() is not None else parallel_world()
        if world is None:     # sequential, or a schedule inside a schedule (same executor)
            return resolved(fn(*args, **kwargs))
        from . import futures
        if world.rank == 0 and futures.workers_serve(world.comm):   # `exec`'s driver, or in executor()
            with futures.executor_where_served(world.comm) as ex:
                outcome = inside(ex, fn, args, kwargs)
            return unpack(outcome)
        with futures.executor(world.comm) as ex:          # SPMD: every rank is here
            outcome = inside(ex, fn, args, kwargs) if ex is not None else None
        shared = world.comm.bcast(sendable(outcome) if world.rank == 0 else None, root=0)
        return unpack(outcome if world.rank == 0 else shared)
    return run   # type: ignore[return-value]


def parallel_world() -> Any:
    """COMM_WORLD's World when calls can go to other ranks; None without mpi4py, with one rank,
    or inside a task (then everything runs in order)."""
    from . import futures
    if not futures.distributing():
        return None
    from .world import World
    world = World.of()
    return world if world.size > 1 else None


def inside(ex: Executor, fn: Callable, args: tuple, kwargs: dict) -> tuple[bool, Any]:
    """(True, fn's resolved result) or (False, its exception), its functional calls on ex."""
    token = _current.set(ex)
    try:
        return True, resolved(fn(*args, **kwargs))
    except Exception as exc:
        return False, exc
    finally:
        _current.reset(token)


def sendable(outcome: tuple[bool, Any]) -> tuple[bool, Any]:
    """An outcome that pickles, for the other ranks (an error that does not, as its text)."""
    try:
        pickle.dumps(outcome)
        return outcome
    except Exception:
        ok, item = outcome
        problem = item if not ok else pickle.PicklingError("the schedule's result does not pickle")
        return False, RuntimeError(exception_line(problem))


def unpack(outcome: tuple[bool, Any]) -> Any:
    """The result of an outcome, or its exception raised."""
    ok, result = outcome
    if not ok:
        raise result
    return result
