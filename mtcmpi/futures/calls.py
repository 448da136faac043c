"""What travels between the Executor's rank 0 and its workers: pickled calls, results encoded
one by one, failures as data, and the exception rebuilt from them on rank 0."""
from __future__ import annotations

import io
import pickle
from concurrent.futures import Future
from functools import partial
from itertools import islice
from typing import Any, Callable, Iterator

from ..errors import Described, RemoteError, describe, exception_line, pickled_or_none, rebuilt
from ..protocol import PICKLED, RAW

DUMPS = partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL)
# Results of these exact types travel inside the message as they are: they always unpickle.
# Any other result is pickled on its own, so one that does not unpickle fails its task only.
PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})
SMALL = 64   # bytes: a plain str or bytes result up to this long is no bigger than a reference


def travels_back(value: Any) -> bool:
    """Whether a submit()'s result goes back to rank 0 with its done notice (a small plain
    value) rather than staying on its worker until a dependent or Future.result() needs it."""
    kind = type(value)
    return kind in PLAIN and (kind is not str and kind is not bytes or len(value) <= SMALL)


class InputLost(RuntimeError):
    """An input of a dataflow call cannot be had: the worker that kept its value broke, or
    the value does not travel between ranks."""


class Held:
    """A Future's result while its value is kept on the worker that computed it, where its
    dependents take it: where it is, and rank 0's copy as it travelled with the done notice
    (code, data), decoded on first use (result()), so a finished value outlives its worker."""

    __slots__ = ("worker", "tid", "copy", "decoded")

    def __init__(self, worker: int, tid: int, copy: tuple[int, Any]):
        self.worker, self.tid, self.copy, self.decoded = worker, tid, copy, None

    def outcome(self) -> tuple[bool, Any]:
        """(True, value) or (False, the exception to raise), decoded once."""
        if self.decoded is None:
            self.decoded, self.copy = decoded(*self.copy), None
        return self.decoded


class _InputPickler(pickle.Pickler):
    """Pickles a call with each Future in it replaced by its number in `found` (a reference
    the worker resolves with the input's value)."""

    def __init__(self, file: io.BytesIO, found: dict[int, Future]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.found = found

    def persistent_id(self, obj: Any) -> int | None:
        if isinstance(obj, Future):
            return self.found.setdefault(id(obj), (len(self.found), obj))[0]
        return None


class _InputUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, values: list):
        super().__init__(file)
        self.values = values

    def persistent_load(self, index: int) -> Any:
        return self.values[index]


def pickled_with_inputs(fn: Callable, args: tuple, kwargs: dict) -> tuple[bytes, list[Future]]:
    """A dataflow call as bytes with its futures as references, and those futures (distinct,
    in the order the references number them); a PicklingError as pickled_call's."""
    pickled_call(fn, (), {})   # the function first: its error names it
    found: dict[int, tuple[int, Future]] = {}
    buffer = io.BytesIO()
    try:
        _InputPickler(buffer, found).dump((fn, args, kwargs))
    except Exception as exc:
        raise pickle.PicklingError(f"cannot send the arguments of a call of "
                                   f"{getattr(fn, '__qualname__', fn)!r} to other ranks: they do "
                                   f"not pickle ({exc})") from exc
    return buffer.getvalue(), [future for _, future in found.values()]


def loaded_with_inputs(payload: bytes, values: list) -> tuple[Callable, tuple, dict]:
    """A dataflow call unpickled, its references replaced by the inputs' values."""
    return _InputUnpickler(io.BytesIO(payload), values).load()


def pickled_call(fn: Callable, args: tuple, kwargs: dict) -> bytes:
    """fn(*args, **kwargs) as bytes, or a PicklingError that names what does not pickle."""
    try:
        return DUMPS((fn, args, kwargs))
    except Exception as exc:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        try:
            DUMPS(fn)
        except Exception:
            raise pickle.PicklingError(
                f"cannot send function {name!r} to other ranks: it does not pickle ({exc}). "
                "Functions travel by reference: define it at module level (lambdas, closures "
                "and nested functions do not pickle)") from exc
        raise pickle.PicklingError(f"cannot send the arguments of a call of {name!r} to other "
                                   f"ranks: they do not pickle ({exc})") from exc


def call(payload: bytes) -> Any:
    """Run a pickled call."""
    fn, args, kwargs = pickle.loads(payload)
    return fn(*args, **kwargs)


def encoded(value: Any) -> tuple[int, Any]:
    """A result as (code, what travels): RAW and the value, or PICKLED and its bytes; a
    PicklingError saying so if it does not pickle (whatever its pickling raised)."""
    if type(value) in PLAIN:
        return RAW, value
    try:
        return PICKLED, DUMPS(value)
    except BaseException as exc:   # a __reduce__ may raise anything, SystemExit included
        raise pickle.PicklingError(f"the result (a {type(value).__name__}) cannot be sent back "
                                   f"to rank 0: it does not pickle: {describe(exc).message}") from None


def call_encoded(payload: bytes) -> tuple[int, Any]:
    """Run a pickled call and encode its result: what an isolated child returns."""
    return encoded(call(payload))


def failure(exc: BaseException, head: str) -> tuple[Described, bytes | None]:
    """An exception as data: described, headed with where it happened, and itself pickled if it
    pickles (rebuilt() makes it an exception again on rank 0)."""
    return describe(exc, head), pickled_or_none(exc)


def decoded(code: int, data: Any) -> tuple[bool, Any]:
    """(True, value) or (False, the exception to raise) for one result as it travelled; never
    raises (a result whose unpickling raises, SystemExit included, fails its own call)."""
    if code == RAW:
        return True, data
    if code != PICKLED:
        return False, rebuilt(*data)
    try:
        return True, pickle.loads(data)
    except BaseException as exc:
        return False, RemoteError(f"the result does not unpickle on rank 0: {exception_line(exc)}")


def call_chunk(fn: Callable, chunk: list[tuple]) -> list:
    """One task of a chunked map: fn over a list of argument tuples."""
    return [fn(*args) for args in chunk]


def chunked(items: Iterator, size: int) -> Iterator[list]:
    """Lists of `size` consecutive items (the last may be shorter)."""
    while chunk := list(islice(items, size)):
        yield chunk
