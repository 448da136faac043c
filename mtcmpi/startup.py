"""Where a rank's start-up goes, and an import broadcast against import storms on big jobs.

Before MPI starts each rank takes its share of its node's cores for BLAS and OpenMP threads
(share_cores), unless the user chose; while MPI starts, its waits wake less often (timer_slack).

Profile: each rank marks its own timeline (process start, Python up, MPI initialised, the task
module imported, the same-code check, the tasks checked, the results file opened, every rank
ready, its first task started); rank 0 gathers the phases and shows the median and the maximum
over ranks (`mtcmpi run --profile-startup`, and the results file's startup_* attributes).

Import broadcast (`--import-broadcast` or MTCMPI_IMPORT_BROADCAST=1): rank 0 imports what the
run needs and broadcasts the compiled code of every pure-Python module it read for that; the
other ranks import those from memory, so a shared filesystem sees one rank's reads, not N.
"""
from __future__ import annotations

import _thread
import marshal
import os
import sys
import time
from importlib import import_module
from importlib.machinery import ModuleSpec, SourceFileLoader
TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing on every rank

if TYPE_CHECKING:   # typing is not imported at run time: it is one more module on every rank
    from typing import Any, Iterable

BROADCAST_VARIABLE = "MTCMPI_IMPORT_BROADCAST"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
LOCAL_RANKS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE")   # ranks on this node
PHASES = (   # (name, what it covers), in order; their sum is launch until the first task
    ("launch", "mpiexec until this process started"),
    ("python", "the interpreter, site and mtcmpi's command line"),
    ("imports", "mtcmpi's modules, the task module, the CLI's checks agreed"),
    ("mpi_init", "import mpi4py.MPI (MPI_Init)"),
    ("tasks", "counting and checking the tasks (rank 0; the others wait)"),
    ("same_code", "rank 0's facts shared, the same-code check, every rank's errors agreed"),
    ("results_file", "opening the results file (--out)"),
    ("first_task", "ready until this rank's first task started (workers)"),
)
_marks: dict[str, float] = {"python": time.time()}   # this module is imported first by the CLI


def mark(name: str, when: float | None = None) -> None:
    """Note that this rank reached `name` now (or at `when`); the first mark of a name stays."""
    _marks.setdefault(name, time.time() if when is None else when)


def process_start() -> float:
    """When this process started (epoch seconds), from /proc to 10 ms (its age, from the uptime
    clock: /proc/stat's boot time is whole seconds); else when mtcmpi was imported."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return _marks["python"]


def share_cores() -> None:
    """Give this rank's BLAS and OpenMP threads its share of the node's cores (the cores it is
    bound to, else the node's over its ranks there), as Dask and Ray give their workers, unless
    the user set any of THREAD_VARIABLES. Before numpy loads: OpenBLAS otherwise starts a
    thread per core in every rank that imports it (mtcmpi's journal does, with --out), and
    they spin: 40% of numpy's import on 2 cores, 16,384 threads for 128 ranks on 128 cores."""
    local = next((int(os.environ[v]) for v in LOCAL_RANKS if os.environ.get(v, "").isdigit()), 1)
    if local < 2 or any(v in os.environ for v in THREAD_VARIABLES):
        return
    cores = os.cpu_count() or 1
    mine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    share = str(mine if mine < cores else max(1, cores // local))
    for name in THREAD_VARIABLES:
        os.environ[name] = share


RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """This process's rank as the launcher announced it (0 when started without one)."""
    return next((int(os.environ[v]) for v in RANK_VARIABLES if v in os.environ), 0)


SLACK_FILE = "/proc/self/timerslack_ns"   # the main thread's timer slack (Linux >= 4.6)
INIT_SLACK_NS = 1_000_000


def timer_slack(ns: int) -> int | None:
    """Set the main thread's timer slack to `ns` (how late the kernel may end its sleeps, and
    those of the threads it starts from now on) and return the one it had; None, and nothing
    changed, off the main thread or where the kernel has no SLACK_FILE."""
    if _thread.get_native_id() != os.getpid():
        return None
    try:
        with open(SLACK_FILE) as f:
            previous = int(f.read())
        with open(SLACK_FILE, "w") as f:
            f.write(str(ns))
        return previous
    except (OSError, ValueError):
        return None


def start_mpi() -> Any:
    """Import mpi4py.MPI, which initialises MPI, with MPI_Init's time marked and the timer slack
    at INIT_SLACK_NS meanwhile (then back to what it was); returns the module. ImportError
    without mpi4py.

    Open MPI's MPI_Init waits for every rank twice (its modex, then a barrier), polling with
    100 us sleeps between: on a full node the ranks that arrived early wake thousands of times a
    second each and take the cores from those still starting. With sleeps allowed to end up to
    1 ms late they wake under a thousand times. 128 ranks on 2 cores then spent 0.10 s of CPU
    each in MPI_Init instead of 0.15-0.21 s, and were all up after 6.3-6.4 s instead of
    9.6-13.8 s (`from mpi4py import MPI` alone, two launches each). A rank with a core to
    itself ends each wait at most 1 ms later."""
    fresh = "mpi4py.MPI" not in sys.modules
    if fresh:
        mark("mpi_start")
    previous = timer_slack(INIT_SLACK_NS) if fresh else None
    try:
        from mpi4py import MPI
    finally:
        if previous is not None:
            timer_slack(previous)
    mark("mpi_end")
    return MPI


def init_mpi() -> Any:
    """Share the node's cores (share_cores), then start MPI (start_mpi); returns COMM_WORLD.

    Nothing more is imported before it, even where rank 0 will need it (numpy for costs and
    --out): on a full node the ranks that reached MPI_Init poll there, and rank 0 importing
    numpy first got so little CPU that it was the last to arrive (2.2-2.6 s, start-up 0.3 s
    longer on 64 ranks, measured before the timer slack); after it, the others wait polling
    every 10 ms and rank 0 has a core to itself."""
    share_cores()
    return start_mpi().COMM_WORLD


def phases(launched: float, ready: float, first_task: float | None) -> list[float]:
    """This rank's phase durations in PHASES order (seconds; NaN where this rank has none)."""
    m = dict(_marks)
    start = min(process_start(), m["python"])
    mpi_end = m.get("mpi_end", m["python"])
    mpi_start = m.get("mpi_start", mpi_end)   # no mpi_start: MPI was up before mtcmpi looked
    resolved = m.get("resolved", mpi_end)
    tasks = m.get("tasks", resolved)
    same = m.get("same_code", tasks)
    return [max(0.0, start - launched), m["python"] - start,
            (mpi_start - m["python"]) + (resolved - mpi_end), mpi_end - mpi_start,
            tasks - resolved, same - tasks, ready - same,
            first_task - ready if first_task is not None else float("nan")]


def summarise(per_rank: Iterable[list[float]]) -> dict[str, tuple[float, float]]:
    """{phase: (median, max)} over the ranks that have the phase."""
    columns = list(zip(*per_rank))
    out = {}
    for (name, _), values in zip(PHASES, columns):
        have = sorted(v for v in values if v == v)
        if have:
            out[name] = (have[len(have) // 2], have[-1])
    return out


def table(summary: dict[str, tuple[float, float]], ranks: int) -> list[str]:
    """The profile as printed by --profile-startup."""
    lines = [f"  start-up on {ranks} ranks (seconds, median / max over ranks):"]
    for name, what in PHASES:
        if name in summary:
            median, top = summary[name]
            lines.append(f"    {name:<13}{median:7.3f} {top:7.3f}   {what}")
    return lines


def attributes(summary: dict[str, tuple[float, float]]) -> dict[str, float]:
    """The profile as results-file attributes: startup_<phase>_median and startup_<phase>_max."""
    return {f"startup_{name}_{kind}": value for name, pair in summary.items()
            for kind, value in zip(("median", "max"), pair)}


def broadcast_wanted(flag: bool = False) -> bool:
    """--import-broadcast, or MTCMPI_IMPORT_BROADCAST set to anything but '' or 0."""
    return flag or os.environ.get(BROADCAST_VARIABLE, "") not in ("", "0")


class MemoryImporter:
    """A meta-path finder and loader for modules whose compiled code came from rank 0."""

    def __init__(self, modules: dict[str, tuple[str, bool, bytes]]):
        self.modules = modules

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        entry = self.modules.get(name)
        if entry is None:
            return None
        origin, package, _ = entry
        spec = ModuleSpec(name, self, origin=origin, is_package=package)
        spec.has_location = True   # __file__ is the real path: tracebacks and data files work
        if package:
            spec.submodule_search_locations = [os.path.dirname(origin)]
        return spec

    def create_module(self, spec: ModuleSpec) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        exec(marshal.loads(self.modules[module.__name__][2]), module.__dict__)


def loaded_from_memory(module: Any) -> bool:
    """Whether this module's code came from rank 0's broadcast (so it is rank 0's code)."""
    return isinstance(getattr(getattr(module, "__spec__", None), "loader", None), MemoryImporter)


def share_imports(comm: Any, modules: list[str], target: str | None) -> int:
    """Collective: rank 0 imports `modules` and the target's module, and broadcasts the code of
    every pure-Python module that took; the others will import them from memory. Returns the
    number of modules shared. An import that fails on rank 0 is left for the run to report."""
    shared: dict[str, tuple[str, bool, bytes]] = {}
    if comm.Get_rank() == 0:
        before = set(sys.modules)
        for name in modules:
            try:
                import_module(name)
            except Exception:   # noqa: BLE001 - reported by the run itself, on every rank alike
                pass
        if target:
            from .tasks import resolve
            try:
                resolve(target)
            except Exception:   # noqa: BLE001 - as above
                pass
        for name in set(sys.modules) - before:
            spec = getattr(sys.modules[name], "__spec__", None)
            if (spec is not None and spec.name == name and spec.origin
                    and isinstance(spec.loader, SourceFileLoader)):   # not aliases (__mp_main__)
                code = spec.loader.get_code(name)
                if code is not None:
                    shared[name] = (spec.origin, spec.submodule_search_locations is not None,
                                    marshal.dumps(code))
    from .world import World

    World.of(comm).barrier()   # the others sleep while rank 0 imports
    shared, version = comm.bcast((shared, sys.version) if comm.Get_rank() == 0 else None, root=0)
    if comm.Get_rank() != 0 and version == sys.version and shared:   # else: the check tells
        sys.meta_path.insert(0, MemoryImporter(shared))
    return len(shared)
