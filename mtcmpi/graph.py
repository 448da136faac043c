"""Dataflow for mtcmpi.Executor: a Future passed as an argument makes the call wait for it.

Executor.submit hands a call here only when one of its arguments holds a Future (at top level
or inside lists, tuples and dicts): the call is pickled at once with each future as a
reference (futures/calls.py), gets its Future, counts its inputs down with done-callbacks and
is queued as soon as the last input is done. An input that failed fails the call with
DependencyError naming that input (and so on down the graph); a cancelled input cancels the
call. Values do not pass through rank 0: when the call is sent, each input is a reference to
the worker that kept its value (futures/dispatch.py), the call goes preferably to that worker,
and an input kept elsewhere comes worker to worker (protocol.py, Dataflow).
"""
from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import Executor as StandardExecutor
from concurrent.futures import CancelledError, Future
from concurrent.futures._base import FINISHED
from itertools import count
from typing import Any, Callable, Iterator

from .errors import exception_line
from .futures.calls import Held, InputLost, pickled_with_inputs

__all__ = ["DependencyError", "InputLost", "holds_future", "in_call", "listed", "submit", "map_calls", "drain"]
CONTAINERS = (list, tuple, dict)
MAY_HOLD = (Future, *CONTAINERS)   # the kinds of item holds_future looks into
_names = count(1)
AHEAD = 4   # a call with at most this many inputs may travel in the batch of its inputs


class DependencyError(Exception):
    """A call did not run because an input it waited for failed; .failed names that input
    (the first failure up the graph), and __cause__ is that input's own exception."""

    def __init__(self, task: str, failed: str, reason: str):
        super().__init__(f"{task} not run: input failed: {failed}: {reason}")
        self.task, self.failed, self.reason = task, failed, reason


def holds_future(value: Any) -> bool:
    """True if value is a Future or a list, tuple or dict holding one (at any depth).

    The item types of a long container are collected at C speed first, so a map over 100k plain
    items costs about 2 ms here (item by item it cost 30 ms), and a submit's few arguments ~1 us."""
    if isinstance(value, Future):
        return True
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return False
    if len(value) > 8 and not any(issubclass(kind, MAY_HOLD) for kind in set(map(type, value))):
        return False
    return any(holds_future(item) for item in value)


def in_call(args: tuple, kwargs: dict) -> bool:
    """True if a call's arguments hold a Future: Executor.submit's check, about 0.3 us a call."""
    for arg in args:
        if isinstance(arg, MAY_HOLD) and holds_future(arg):
            return True
    for arg in kwargs.values():
        if isinstance(arg, MAY_HOLD) and holds_future(arg):
            return True
    return False


def listed(iterables: tuple) -> tuple:
    """map()'s iterables as lists or tuples, so they can be looked through for futures and read
    again (a generator is consumed here, as map would consume it anyway)."""
    return tuple(it if isinstance(it, (list, tuple)) else list(it) for it in iterables)


def task_name(fn: Callable) -> str:
    """A call's name for messages: its function's qualified name and a graph-wide number."""
    return f"{getattr(fn, '__qualname__', None) or type(fn).__name__}#{next(_names)}"



def describe(future: Future) -> str:
    """The name of a failed input for a DependencyError: its call's name if the graph made it,
    and where it failed, from the header of its remote traceback ("task 3 failed on rank 1...")."""
    name = getattr(future, "name", None)
    header = str(future.exception().__cause__ or "").partition(":\n")[0]
    where = header if header.startswith("task ") else ""
    return ", ".join(filter(None, (name, where))) or "a submitted task"


class Graph:
    """The calls of one Executor that wait for inputs; shutdown waits until each is queued."""

    def __init__(self, dispatcher: Any):
        self.dispatcher = dispatcher             # futures/pool.py's Dispatcher
        self.waiting: set[Future] = set()
        self.idle = threading.Condition(threading.Lock())

    def submit(self, fn: Callable, args: tuple, kwargs: dict) -> Future:
        """fn(*args, **kwargs) once every future in the arguments is done; its future now."""
        payload, found = pickled_with_inputs(fn, args, kwargs)
        future = self.dispatcher.future_class()
        future.name, future.waits = task_name(fn), True
        problem: list[Future] = []                # inputs that failed or were cancelled
        done, last = count(1), len(found)         # next() is atomic: the count needs no lock
        with self.idle:
            self.waiting.add(future)
        future.add_done_callback(self.release)   # a cancelled call waits no more

        def input_done(source: Future) -> None:
            if source._state != FINISHED or source._exception is not None:
                problem.append(source)
            if next(done) == last:
                self.start(future, payload, found, problem)

        if last <= AHEAD:   # the dispatch may send it right behind its inputs (dispatch.py)
            record = (future, payload, found)
            for source in found:
                if getattr(type(source), "dispatcher", None) is self.dispatcher:
                    source.ahead = [record] if source.ahead is None else [*source.ahead, record]
        for source in found:
            source.add_done_callback(input_done)
        return future

    def start(self, future: Future, payload: bytes, found: list[Future], problem: list[Future]) -> None:
        """All inputs are done: fail, cancel, or queue the call (for the worker that keeps
        most of its inputs, if any does)."""
        for source in found:                      # done: no call can travel behind it any more
            source.ahead = None                   # (and the record's cycle is broken)
        try:
            if future.done():                     # cancelled while it waited
                return
            if not problem:
                mine = self.dispatcher.future_class
                kept = [value.worker for f in found if type(value := f._result) is Held and type(f) is mine]
                prefer = Counter(kept).most_common(1)[0][0] if kept else None
                self.dispatcher.queue_dependent(future, payload, found, prefer)
            elif problem[0].cancelled():
                if not future.cancel():   # sent behind its input, and started: it cannot run
                    future.set_exception(CancelledError(f"{future.name}: its input was cancelled"))
            else:
                future.set_exception(dependency_error(future, problem[0]))
        finally:
            self.release(future)

    def release(self, future: Future) -> None:
        """future no longer waits: it was queued, failed or cancelled."""
        with self.idle:
            self.waiting.discard(future)
            self.idle.notify_all()

    def drain(self, cancel: bool) -> None:
        """Wait until no call waits for inputs (cancelling the waiting ones if asked)."""
        if cancel:
            with self.idle:
                waiting = list(self.waiting)
            for future in waiting:
                future.cancel()
        with self.idle:
            while self.waiting:
                self.idle.wait()


def dependency_error(future: Future, problem: Future) -> DependencyError:
    """The error of a call whose input failed, naming the first failed task up the graph."""
    cause = problem.exception()
    if isinstance(cause, DependencyError):
        error = DependencyError(future.name, cause.failed, cause.reason)
    else:
        error = DependencyError(future.name, describe(problem), exception_line(cause))
    error.__cause__ = cause
    return error


def graph_of(executor: StandardExecutor) -> Graph:
    """The Graph of an Executor, made on first use."""
    graph = executor.__dict__.get("_mtcmpi_graph")
    if graph is None:
        graph = executor.__dict__.setdefault("_mtcmpi_graph", Graph(executor._dispatcher))
    return graph


def submit(executor: StandardExecutor, fn: Callable, args: tuple, kwargs: dict) -> Future:
    """Executor.submit for a call whose arguments hold futures."""
    return graph_of(executor).submit(fn, args, kwargs)


def map_calls(executor: StandardExecutor, fn: Callable, iterables: tuple, timeout: float | None) -> Iterator:
    """Executor.map when an item holds a future: one submit per call (dependent or not), the
    results in order as concurrent.futures' map gives them."""
    return StandardExecutor.map(executor, fn, *iterables, timeout=timeout)


def drain(executor: StandardExecutor, cancel: bool) -> None:
    """Executor.shutdown's first step: no call may still wait for an input when it closes."""
    graph = executor.__dict__.get("_mtcmpi_graph")
    if graph is not None:
        graph.drain(cancel)
