"""Scheduling policies: who runs which task.

static        contiguous blocks of the task list, one per rank (rank 0 works too); no messages.
static:cyclic task i runs on rank i mod size; no messages.
dynamic       rank 0 hands out chunks on request (self-scheduling); fixed --chunk or automatic.
guided        like dynamic, chunks shrink with the remaining work: remaining / (k x workers).

With task costs (by_cost, see costs.py) dynamic and guided hand out the longest tasks first and
static gives each rank a share of equal cost (LPT) instead of an equal count.
"""
from __future__ import annotations

import enum
import math

from .errors import UsageError


class Kind(enum.Enum):
    """The family of a policy, which decides whether rank 0 runs tasks or hands them out."""

    STATIC = "static"
    DYNAMIC = "dynamic"
    GUIDED = "guided"
    PARALLEL = "parallel tasks"   # groups.py: rank 0 packs tasks of k ranks

    @classmethod
    def of(cls, name: str) -> Kind:
        """The kind of a policy as named, e.g. in a results file: 'guided:4, chunk auto, ...'
        (a name it does not know, as from a file without a policy, counts as static)."""
        word = name.split(",")[0].split(":")[0].strip()
        return cls(word) if word in cls._value2member_map_ else cls.STATIC

    def working_ranks(self, ranks: int) -> int:
        """Ranks that run tasks: all of them, but for a self-scheduled run on more than one rank,
        whose rank 0 only hands out work. Every efficiency mtcmpi shows divides by this."""
        return ranks - 1 if ranks > 1 and self is not Kind.STATIC else ranks


class Static:
    """Every rank runs its own share; `cyclic` deals tasks round-robin instead of in blocks.
    (Plain classes, not dataclasses: see world.World.)"""

    kind = Kind.STATIC

    def __init__(self, cyclic: bool = False, name: str = "static", by_cost: bool = False):
        self.cyclic, self.name, self.by_cost = cyclic, name, by_cost

    def share(self, rank: int, size: int, n: int) -> range:
        """The task ids of one rank: blocks differ in length by at most one."""
        if self.cyclic:
            return range(rank, n, size)
        q, r = divmod(n, size)
        lo = rank * q + min(rank, r)
        return range(lo, lo + q + (rank < r))


class Dynamic:
    """Self-scheduling: a worker asks rank 0 for the next chunk while it runs the current one.

    With chunk=None the chunk size follows measurements: large enough that the master's time
    per message is a small share of the time the chunk keeps a worker busy, small enough
    (remaining / (2 x workers)) that the last chunks still balance.
    """

    kind = Kind.DYNAMIC
    master_load = 0.1    # the share of a worker's task time the master may spend answering it
    max_chunk = 10000

    def __init__(self, chunk: int | None = None, prefetch: int = 1, by_cost: bool = False,
                 prefetch_below: float = 0.01, name: str = "dynamic"):
        self.chunk, self.prefetch, self.by_cost, self.name = chunk, prefetch, by_cost, name
        self.prefetch_below = prefetch_below   # auto prefetch: ask ahead only while chunks run shorter (s)
        self._busy, self._done, self._service = 0.0, 0, 2e-5

    def observe(self, done: float, busy: float) -> None:
        """A worker reports it ran `done` tasks in `busy` seconds since its last request."""
        self._done += done
        self._busy += busy

    def observe_service(self, seconds: float) -> None:
        """The master's own cost of answering one request (exponential average)."""
        self._service = 0.9 * self._service + 0.1 * seconds

    def chunk_size(self, remaining: int, workers: int) -> int:
        if self.chunk:
            return self.chunk
        if not self._done:
            return 1
        per_task = max(self._busy / self._done, 1e-7)
        want = math.ceil(workers * self._service / (self.master_load * per_task))
        tail = max(1, remaining // (2 * workers))
        return max(1, min(want, tail, self.max_chunk))


class Guided(Dynamic):
    """Chunks of remaining / (k x workers), at least `chunk` (default 1)."""

    kind = Kind.GUIDED

    def __init__(self, chunk: int | None = None, prefetch: int = 1, by_cost: bool = False,
                 prefetch_below: float = 0.01, name: str = "guided", k: int = 2):
        super().__init__(chunk, prefetch, by_cost, prefetch_below, name)
        self.k = k

    def chunk_size(self, remaining: int, workers: int) -> int:
        return max(self.chunk or 1, math.ceil(remaining / (self.k * workers)))


Policy = Static | Dynamic

SCHEDULES = "static, static:cyclic, dynamic, guided, guided:K"
MAX_PREFETCH = 1000   # requests a worker sends up front; more only floods the master


def parse_schedule(text: str, chunk: int | None = None, prefetch: int | str = "auto",
                   by_cost: bool = False) -> Policy:
    """Turn a --schedule value (and --chunk / --prefetch N|auto, and whether tasks have
    costs) into a policy."""
    kind, _, arg = text.partition(":")
    if by_cost and text == "static:cyclic":
        raise UsageError("static:cyclic deals tasks by number; with costs use --schedule static "
                         "(equal-cost shares) or dynamic (longest first)")
    if chunk is not None and chunk < 1:
        raise UsageError(f"--chunk must be >= 1, not {chunk}")
    if prefetch == "auto":
        ahead = dict(prefetch=1)
    elif str(prefetch).isdigit() and int(prefetch) <= MAX_PREFETCH:
        ahead = dict(prefetch=int(prefetch), prefetch_below=math.inf)
    else:
        raise UsageError(f"--prefetch must be a whole number from 0 to {MAX_PREFETCH} or 'auto', "
                         f"not {prefetch!r}")
    if kind == "static" and arg in ("", "block", "cyclic"):
        return Static(cyclic=arg == "cyclic", name=text if arg else "static", by_cost=by_cost)
    if kind == "dynamic" and not arg:
        return Dynamic(chunk=chunk, by_cost=by_cost, **ahead)
    if kind == "guided" and (not arg or arg.isdigit() and int(arg) > 0):
        return Guided(chunk=chunk, k=int(arg or 2), name=text, by_cost=by_cost, **ahead)
    raise UsageError(f"unknown schedule {text!r}; choose one of: {SCHEDULES}")
