"""RunOptions: how to run a task list, as `mtcmpi run`'s options and `mtcmpi.run()`'s keywords.

The command line and the Python API build the same record, so both accept the same options with
the same defaults and refuse the same bad values with the same one-line UsageError (raised when
the object is made, identically on every rank). A new capability adds one field here, one check
in check(), and one argument in run_args.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from .errors import UsageError

if TYPE_CHECKING:
    from .costs import CostSpec
    from .faults import Stop
    from .groups import GroupSpec
    from .output import Output
    from .policies import Policy
    from .progress import Progress

LOG_LEVELS = ("debug", "info", "warning", "error")
PACKINGS = ("backfill", "greedy", "strict")   # groups.py: how tasks of k ranks are placed
INT64_MAX = 2 ** 63 - 1
MAX_SECONDS = 1e8   # about 3 years: beyond it timers overflow (setitimer, Event.wait)


class Fields(NamedTuple):
    """Every option of a run but the task list itself; see `mtcmpi run --help` for each. (A
    NamedTuple, not a dataclass: see world.World.)"""

    # scheduling
    schedule: str = "dynamic"
    chunk: int | None = None
    prefetch: int | str = "auto"
    # task costs
    cost: str | None = None
    costs_from: str | None = None
    # parallel tasks: a task on k ranks (groups.py)
    ranks_per_task: int | None = None
    ranks: str | None = None
    packing: str = "backfill"
    # results file
    out: str | None = None
    restart: bool = False
    retry_failed: bool = False
    serial_io: bool = False
    pickle_results: bool = False
    flush_interval: float = 2.0
    compression: str | None = None
    chunk_rows: int | None = None
    # stopping early and faults
    walltime: str | None = None
    grace: float = 20.0
    max_failures: int | None = None
    fail_fast: bool = False
    timeout: float | None = None
    isolate: bool = False
    retries: int = 0
    # what rank 0 shows
    quiet: bool = False
    progress_interval: float = 30.0
    log_level: str | None = None
    # start-up
    profile_startup: bool = False
    import_broadcast: bool = False   # the CLI's: rank 0 reads the modules a run imports (startup.py)


class RunOptions(Fields):
    """The options of a run, checked when made: a bad value is a UsageError at once."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> RunOptions:
        options = super().__new__(cls, *args, **kwargs)
        options.check()
        return options

    @classmethod
    def from_args(cls, args: Any) -> RunOptions:
        """The options of a parsed `mtcmpi run` command line (an argparse Namespace)."""
        return cls(**{name: getattr(args, name) for name in cls._fields if hasattr(args, name)})

    @classmethod
    def of(cls, given: Mapping[str, Any]) -> RunOptions:
        """From keywords (the API): an unknown name is a UsageError naming the known ones."""
        names = set(cls._fields)
        unknown = sorted(set(given) - names)
        if unknown:
            raise UsageError(f"unknown run option {unknown[0]!r}; the options are: {', '.join(sorted(names))}")
        return cls(**given)

    def check(self) -> None:
        """Refuse the first bad value or combination with one line."""
        whole("--chunk", self.chunk, 1)
        whole("--chunk-rows", self.chunk_rows, 1)
        whole("--retries", self.retries, 0, none=False)
        whole("--max-failures", self.max_failures, 1)
        seconds("--flush-interval", self.flush_interval, above=0)
        seconds("--grace", self.grace, at_least=0)
        seconds("--timeout", self.timeout, above=0)
        seconds("--progress-interval", self.progress_interval, above=0)
        if self.walltime is not None:
            from .faults import parse_walltime

            if not parse_walltime(self.walltime) > 0:
                raise UsageError(f"--walltime {self.walltime!r} must be longer than 0 s")
        if self.out is None and (self.restart or self.retry_failed or self.serial_io
                                 or self.pickle_results or self.compression or self.chunk_rows):
            raise UsageError("--restart, --retry-failed, --serial-io, --pickle-results, --compression "
                             "and --chunk-rows go with --out")
        if self.out == "":
            raise UsageError("--out is empty: give the results file, e.g. --out results.h5")
        if self.cost and self.costs_from:
            raise UsageError("give --cost or --costs-from, not both")
        whole("--ranks-per-task", self.ranks_per_task, 1)
        if self.ranks_per_task is not None and self.ranks is not None:
            raise UsageError("give --ranks-per-task or --ranks, not both")
        if self.ranks is not None and not (isinstance(self.ranks, str) and self.ranks.strip()):
            raise UsageError(f"--ranks {self.ranks!r}: give a column of --params or module:function")
        if self.packing not in PACKINGS:
            raise UsageError(f"--packing {self.packing!r}: choose one of {', '.join(PACKINGS)}")
        if self.log_level is not None and self.log_level.lower() not in LOG_LEVELS:
            raise UsageError(f"--log-level {self.log_level!r}: use one of {', '.join(LOG_LEVELS)}")
        self.policy()   # the schedule, --chunk and --prefetch together

    @property
    def failure_limit(self) -> int | None:
        """Failed tasks after which no more are started (--fail-fast is 1)."""
        return 1 if self.fail_fast else self.max_failures

    def costs(self) -> CostSpec | None:
        """Where task costs come from, or None without --cost/--costs-from."""
        if not (self.cost or self.costs_from):
            return None
        from .costs import CostSpec   # numpy: imported only with costs

        return CostSpec(self.cost, self.costs_from)

    def policy(self) -> Policy:
        """A fresh scheduling policy (it keeps measurements, so one per run)."""
        from .policies import parse_schedule

        return parse_schedule(self.schedule, self.chunk, self.prefetch,
                              bool(self.cost or self.costs_from))

    def group_spec(self) -> GroupSpec:
        """How many ranks each task takes (one each unless --ranks-per-task or --ranks)."""
        from .groups import GroupSpec

        return GroupSpec(self.ranks_per_task, self.ranks, self.packing)

    def output(self) -> Output | None:
        """The results file, or None without --out (then h5py is never imported)."""
        if self.out is None:
            return None
        from .output import Output

        return Output(self.out, self.restart, self.retry_failed, self.serial_io,
                      self.pickle_results, self.flush_interval, self.compression, self.chunk_rows)

    def deadline(self) -> float | None:
        """When to start no more tasks (--walltime, else the batch system's end), read by rank
        0 alone and shared: the batch system may be asked (squeue)."""
        from .faults import deadline

        return deadline(self.walltime, self.grace)

    def stop(self, deadline: float | None) -> Stop:
        """The limits of this run, with rank 0's deadline()."""
        from .faults import Stop

        return Stop(deadline, self.failure_limit, self.grace)

    def progress(self) -> Progress | None:
        """Rank 0's progress display, or None with --quiet (then the engine never calls it)."""
        from .progress import Progress

        return None if self.quiet else Progress(interval=self.progress_interval)

    def configure_logging(self, rank: int) -> None:
        """--log-level: rank 0's "mtcmpi" logger at that level, on stderr."""
        if self.log_level is not None and rank == 0:
            import logging   # only with --log-level: one package fewer at every rank's start-up

            logging.basicConfig(format="mtcmpi: %(levelname)s: %(message)s")
            logging.getLogger("mtcmpi").setLevel(self.log_level.upper())


def whole(option: str, value: Any, least: int, none: bool = True) -> None:
    """A whole-number option: an int (not a bool) from `least` up to int64, or None if allowed."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= INT64_MAX:
        raise UsageError(f"{option} must be >= {least}, a whole number, not {value!r}")


def seconds(option: str, value: Any, *, above: float | None = None, at_least: float | None = None) -> None:
    """A time option: a number of seconds, > above or >= at_least, up to MAX_SECONDS, or None."""
    if value is None:
        return
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and value <= MAX_SECONDS
          and (above is None or value > above) and (at_least is None or value >= at_least))
    if not ok:
        rule = f"> {above:g}" if above is not None else f">= {at_least:g}"
        raise UsageError(f"{option} must be {rule} and finite (at most {MAX_SECONDS:,.0f} s), "
                         f"not {value!r}")
