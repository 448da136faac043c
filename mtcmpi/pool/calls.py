"""A call as bytes, at both ends: pickled by the client, run by a pool's worker.

Functions go by cloudpickle, so a function defined in a notebook travels by value (an
importable one by reference, as pickle does); each function object is pickled once per client
and unpickled once per worker process, so a stream of calls of one function costs one pickle
of its arguments each. A failure comes back as data: its type and message, a traceback headed
with the rank and host where it happened, and the exception itself when it pickles.
"""
from __future__ import annotations

import pickle
from typing import Any, Callable

import cloudpickle

from ..errors import Described, RemoteError, describe, exception_line, pickled_or_none, rebuilt

CACHE = 256   # functions remembered per process


class Calls:
    """Pickles calls for one client, remembering each function's bytes."""

    def __init__(self):
        self.functions: dict[Callable, bytes] = {}

    def function(self, fn: Callable) -> bytes:
        blob = self.functions.get(fn)
        if blob is None:
            try:
                blob = cloudpickle.dumps(fn)
            except Exception as exc:
                raise pickle.PicklingError(f"cannot send function {name(fn)} to a pool: it does not "
                                           f"pickle ({exception_line(exc)})") from exc
            if len(self.functions) >= CACHE:
                self.functions.clear()
            self.functions[fn] = blob
        return blob

    def call(self, fn: Callable, args: tuple, kwargs: dict, chunked: bool = False) -> bytes:
        """fn(*args, **kwargs) as bytes (with chunked, fn over a list of argument tuples), or a
        PicklingError naming what does not pickle."""
        call = (self.function(fn), args, kwargs, chunked)
        try:
            return pickle.dumps(call, protocol=4)
        except Exception:
            try:
                return cloudpickle.dumps(call, protocol=4)
            except Exception as exc:
                raise pickle.PicklingError(f"cannot send the arguments of a call of {name(fn)} to "
                                           f"a pool: they do not pickle ({exception_line(exc)})") from exc


def name(fn: Callable) -> str:
    return repr(getattr(fn, "__qualname__", None) or fn)


_functions: dict[bytes, Callable] = {}


def run(payload: bytes, where: str) -> tuple[bool, bytes]:
    """Run a pickled call: (True, pickled value) or (False, pickled (type, message, traceback,
    pickled exception or None)), the traceback headed with `where`."""
    try:
        blob, args, kwargs, chunked = pickle.loads(payload)
        fn = _functions.get(blob)
        if fn is None:
            if len(_functions) >= CACHE:
                _functions.clear()
            fn = _functions[blob] = pickle.loads(blob)
        value = [fn(*a) for a in args[0]] if chunked else fn(*args, **kwargs)
    except (Exception, SystemExit) as exc:
        return False, failure(exc, where)
    try:
        return True, pickle.dumps(value, protocol=4)
    except Exception:
        try:
            return True, cloudpickle.dumps(value, protocol=4)
        except Exception as exc:
            problem = pickle.PicklingError(f"the result (a {type(value).__name__}) cannot be sent "
                                           f"back: {exception_line(exc)}")
            return False, failure(problem, where)


def failure(exc: BaseException, where: str) -> bytes:
    """An exception as bytes: described (its traceback the task's frames, headed with where) and
    itself if it pickles."""
    return pickle.dumps((*describe(exc, f"{where}:\n"), pickled_or_none(exc)), protocol=4)


def value(ok: bool, blob: bytes, pool: str) -> tuple[Any, Described | None]:
    """What a result means at the client: (value, None), or (exception to raise, its description);
    the exception has a RemoteTraceback headed with the pool's name as __cause__."""
    if ok:
        try:
            return pickle.loads(blob), None
        except Exception as exc:
            error = RemoteError(f"the result does not unpickle here: {exception_line(exc)}")
            return error, describe(error, traceback=False)
    kind, message, text, itself = pickle.loads(blob)
    described = Described(kind, message, f"{pool}, {text}")
    return rebuilt(described, itself), described
