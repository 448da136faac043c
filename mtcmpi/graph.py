"""Dataflow for mtcmpi.Executor: a Future passed as an argument makes the call wait for it.

Executor.submit hands a call here only when one of its arguments holds a Future (at top level
or inside lists, tuples and dicts): the call then gets a Dependent future at once, counts its
inputs down with done-callbacks, and is submitted to the Executor, with the inputs' values in
place of the futures, as soon as the last input is done. An input that failed fails the call
with DependencyError naming that input (and so on down the graph); a cancelled input cancels
the call. Values pass through rank 0 (the driver), as results of any task do.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from concurrent.futures import Executor as StandardExecutor
from itertools import count
from typing import Any, Callable, Iterator

CONTAINERS = (list, tuple, dict)
MAY_HOLD = (Future, *CONTAINERS)   # the kinds of item holds_future looks into
_names = count(1)


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


def inputs(value: Any, found: dict[int, Future]) -> None:
    """Collect the distinct futures in value (keyed by id) into found."""
    if isinstance(value, Future):
        found[id(value)] = value
    elif isinstance(value, CONTAINERS):
        for item in (value.values() if isinstance(value, dict) else value):
            inputs(item, found)


def resolved(value: Any, values: dict[int, Any]) -> Any:
    """value with every future replaced by its value (values: id(future) -> value), containers
    rebuilt."""
    if isinstance(value, Future):
        return values[id(value)]
    if isinstance(value, dict):
        return type(value)((k, resolved(v, values)) for k, v in value.items()) if holds_future(value) else value
    if isinstance(value, (list, tuple)) and holds_future(value):
        items = [resolved(item, values) for item in value]
        if type(value) in (list, tuple):
            return type(value)(items)
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    return value


def task_name(fn: Callable) -> str:
    """A call's name for messages: its function's qualified name and a graph-wide number."""
    return f"{getattr(fn, '__qualname__', None) or type(fn).__name__}#{next(_names)}"


class Dependent(Future):
    """The future of a call that waits for its inputs; cancel() works until the call has
    started on a worker (before that, it also drops the call from the Executor's queue)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.inner: Future | None = None      # the Executor's future, once submitted
        self.lock = threading.RLock()

    def cancel(self) -> bool:
        with self.lock:
            if self.inner is not None:
                return self.inner.cancel()    # its outcome is copied here by settle_from
            if not self.done():
                cancel_waiting(self)
            return self.cancelled()


def cancel_waiting(future: Future) -> None:
    """Cancel a future that is not running, telling wait() and as_completed() at once."""
    Future.cancel(future)
    future.set_running_or_notify_cancel()


def describe(future: Future) -> str:
    """The name of a failed input for a DependencyError: its call's name if the graph made it,
    and where it failed, from the header of its remote traceback ("task 3 failed on rank 1...")."""
    name = getattr(future, "name", None)
    header = str(future.exception().__cause__ or "").partition(":\n")[0]
    where = header if header.startswith("task ") else ""
    return ", ".join(filter(None, (name, where))) or "a submitted task"


class Graph:
    """The calls of one Executor that wait for inputs; shutdown waits until each is submitted."""

    def __init__(self, executor: StandardExecutor):
        self.executor = executor
        self.waiting: set[Dependent] = set()
        self.idle = threading.Condition(threading.Lock())

    def submit(self, fn: Callable, args: tuple, kwargs: dict) -> Dependent:
        """fn(*args, **kwargs) once every future in the arguments is done; its future now."""
        found: dict[int, Future] = {}
        inputs(args, found)
        inputs(kwargs, found)
        future = Dependent(task_name(fn))
        values: dict[int, Any] = {}               # id(input) -> its value, as each is done
        problem: list[Future] = []                # the first input that failed or was cancelled
        with self.idle:
            self.waiting.add(future)
        future.add_done_callback(self.release)   # a cancelled call waits no more

        def input_done(source: Future) -> None:
            try:                                  # one look at the input: its value or its failure
                value = source.result(timeout=0)
            except BaseException:
                value = problem.append(source)
            with future.lock:
                values[id(source)] = value
                if len(values) < len(found):
                    return
            self.start(future, fn, args, kwargs, values, problem)

        for source in found.values():
            source.add_done_callback(input_done)
        return future

    def start(self, future: Dependent, fn: Callable, args: tuple, kwargs: dict,
              values: dict[int, Any], problem: list[Future]) -> None:
        """All inputs are done: fail, cancel, or submit the call with their values."""
        try:
            with future.lock:
                if future.done():                 # cancelled while it waited
                    return
                if not problem:
                    try:
                        future.inner = self.executor.submit(fn, *resolved(args, values),
                                                            **resolved(kwargs, values))
                    except BaseException as exc:   # e.g. the values do not pickle
                        future.set_exception(exc)
                        return
                    future.inner.add_done_callback(lambda inner: settle_from(future, inner))
                elif problem[0].cancelled():
                    cancel_waiting(future)
                else:
                    future.set_exception(dependency_error(future, problem[0]))
        finally:
            self.release(future)

    def release(self, future: Dependent) -> None:
        """future no longer waits: it was submitted, failed or cancelled."""
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


def dependency_error(future: Dependent, problem: Future) -> DependencyError:
    """The error of a call whose input failed, naming the first failed task up the graph."""
    cause = problem.exception()
    if isinstance(cause, DependencyError):
        error = DependencyError(future.name, cause.failed, cause.reason)
    else:
        error = DependencyError(future.name, describe(problem), f"{type(cause).__name__}: {cause}")
    error.__cause__ = cause
    return error


def settle_from(future: Dependent, inner: Future) -> None:
    """Copy the Executor future's outcome into the Dependent that the user holds."""
    if inner.cancelled():
        cancel_waiting(future)
    elif inner.exception() is not None:
        future.set_exception(inner.exception())
    else:
        future.set_result(inner.result())


def graph_of(executor: StandardExecutor) -> Graph:
    """The Graph of an Executor, made on first use."""
    graph = executor.__dict__.get("_mtcmpi_graph")
    if graph is None:
        graph = executor.__dict__.setdefault("_mtcmpi_graph", Graph(executor))
    return graph


def submit(executor: StandardExecutor, fn: Callable, args: tuple, kwargs: dict) -> Dependent:
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
