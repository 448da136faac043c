"""map()'s results without a Future per call: one MapResults per map, one Slot per call."""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator


class MapResults:
    """The outcomes of one map() call, filled in by the dispatcher and read in order (or as
    they come, unordered)."""

    CANCELLED = (False, None)

    def __init__(self, n: int, unordered: bool, tell: Callable[[], None]):
        self.outcomes: list[tuple[bool, Any] | None] = [None] * n
        self.cond = threading.Condition(threading.Lock())
        self.next = 0              # the index the reader waits for (-1: any, unordered)
        self.arrived: deque[int] | None = deque() if unordered else None
        self.closed = False        # the reader stopped early: drop what has not started
        self.tell = tell

    def settle(self, index: int, outcome: tuple[bool, Any]) -> None:
        """Store one outcome (the first only) and wake the reader if it waits for it. In order,
        the lock is taken only to wake: the reader sets `next` before it looks at the outcome,
        and this stores the outcome before it looks at `next`, so one of them sees the other."""
        if self.outcomes[index] is not None:
            return   # cancelled or failed already
        self.outcomes[index] = outcome
        if self.arrived is not None:
            with self.cond:
                self.arrived.append(index)
                self.cond.notify()
        elif index == self.next:
            with self.cond:
                self.cond.notify()

    def read(self, end: float | None) -> Iterator:
        """Each value in turn, raising a failed call's exception (TimeoutError past end);
        closing it cancels the calls not started."""
        try:
            for i in range(len(self.outcomes)):
                yield self.pop(self.wait_for(i, end))
        finally:
            with self.cond:
                self.closed = True
            self.tell()

    def wait_for(self, i: int, end: float | None) -> int:
        """The index of the next outcome to read, once it is there."""
        with self.cond:
            self.next = i
            while (self.arrived is None and self.outcomes[i] is None) or \
                    (self.arrived is not None and not self.arrived):
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError()
                self.cond.wait(left)
            return i if self.arrived is None else self.arrived.popleft()

    def pop(self, i: int) -> Any:
        """The value at i, or raise its exception; forgets it, so nothing read stays alive."""
        ok, value = self.outcomes[i]
        self.outcomes[i] = self.CANCELLED
        if not ok:
            raise value if value is not None else cf.CancelledError()
        return value


class Slot:
    """One call of a map: the Future methods the dispatcher uses, settling into MapResults."""

    __slots__ = ("results", "index")

    def __init__(self, results: MapResults, index: int):
        self.results, self.index = results, index

    def cancelled(self) -> bool:
        return self.results.closed or self.results.outcomes[self.index] is MapResults.CANCELLED

    def set_running_or_notify_cancel(self) -> bool:
        return not self.cancelled()

    def set_result(self, value: Any) -> None:
        self.results.settle(self.index, (True, value))

    def set_exception(self, exc: BaseException) -> None:
        self.results.settle(self.index, (False, exc))

    def cancel(self) -> bool:
        self.results.settle(self.index, MapResults.CANCELLED)
        return True

    def done(self) -> bool:
        return self.results.outcomes[self.index] is not None
