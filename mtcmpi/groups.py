"""Parallel tasks: a task that runs on k ranks, packed onto the job by rank 0.

A task's size k comes from --ranks-per-task K (every task) or --ranks COLUMN|module:function (one
per task, counted on rank 0 before anything runs). Rank 0 is the master: it packs tasks onto the
free worker ranks, larger first, and tells each group's members what to run; the first member is
the task's root, which runs it and records its row.

- A Python function with a `comm` parameter is called on all k members at once, with an mpi4py
  communicator of exactly those ranks, built by the members alone (MPI-3 Create_group) and freed
  after the task. The root's return value is the result; the others' are dropped. An exception on
  any member fails the task (the root's if it raised, else the first other member's): the members
  report to the root point-to-point on COMM_WORLD, never in a collective a failed rank could
  leave half-done. A rank that raised while the others wait in one of the *function's own*
  collectives (one it never reached) cannot free them: no MPI-3 call can. So a rank that raised
  waits STUCK_AFTER seconds for the rest of its group to finish the task, and if they do not,
  it records the task as failed and ends the job through stop.expired, as --grace does (its
  journal flushed, exit 75: run again to resume), instead of leaving the job hung.
- A command task runs on its root alone; {mpirun} in its template becomes a launcher line for the
  group's hosts and slots ({np}, {hosts}, {hostfile} for other launchers), started in a clean
  environment (the enclosing job's MPI variables removed). The other members get no message:
  their mtcmpi processes wait, sleeping, while the program has their cores.

Packing (Scheduler, shared by the master and scaling/simulate.py's model), --packing:
  backfill  (default) larger first; when the largest waiting task does not fit, smaller ones fill
            the free ranks, but only until it has waited one mean task duration (of the tasks
            finished so far): then no smaller task starts until it has started, so a stream of
            small tasks cannot starve it.
  greedy    larger first, any task that fits starts at once (a large task may starve).
  strict    larger first, never overtaken: free ranks idle until the largest waiting task fits.
A group takes the ranks of one host when one host has enough free (the fullest such host, best
fit), else the hosts with the most free ranks first, so it spans as few hosts as possible.
"""
from __future__ import annotations

import inspect
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from mpi4py import MPI

from .commands import CommandFailed, CommandRunner, CommandTask
from .costs import longest_first
from .engine import run_with_retries, tasks_of, watched
from .errors import UsageError, exception_line
from .faults import Retries, Stop
from .isolate import CommandDeadline, kill_group, remote_class
from .policies import Kind
from .progress import Progress
from .tasklog import Failure, TaskLog
from .tasks import CALL_KEYWORDS, CALL_ONE, CALL_STAR, Source, invoker, resolve
from .world import World

ASSIGN, DONE, OUTCOME = 11, 12, 13   # master -> member, root -> master, member -> root
CREATE = 14   # the tag of MPI_Comm_create_group among a task's members (no message uses it)
ACK = 15      # root -> a member that raised: the whole group has finished the task
STUCK_AFTER = 10.0   # seconds a rank that raised waits for the rest of its group (stuck_message)
GROUP_PLACEHOLDERS = ("{mpirun}", "{np}", "{hosts}", "{hostfile}")
STEP_ASIDE = 0.01    # longest sleep between probes of a rank idle in a parallel run (seconds)
KILL_GRACE = 2.0     # after SIGTERM at --timeout, a launcher has this long before SIGKILL
NESTED_MPI = ("OMPI_", "PMIX_", "PMI_", "HYDRA_", "I_MPI_HYDRA", "MPIR_")
KEPT_MPI = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM",
            "OMPI_MCA_rmaps_base_oversubscribe")   # the user's own settings, not the job's identity
clock = time.time


@dataclass(frozen=True)
class Packed:
    """The policy of a run of parallel tasks, as the summary and the results file name it."""

    packing: str = "backfill"
    by_cost: bool = False
    kind = Kind.PARALLEL

    @property
    def name(self) -> str:
        return f"parallel tasks, {self.packing} packing"


@dataclass(frozen=True)
class GroupSpec:
    """How many ranks each task takes: per_task for all, or `ranks` (a column or a function);
    made by RunOptions.group_spec(), which has checked the values."""

    per_task: int | None = None
    ranks: str | None = None
    packing: str = "backfill"

    @property
    def given(self) -> bool:
        return self.per_task is not None or self.ranks is not None

    def sizes(self, source: Source, n: int) -> np.ndarray:
        """Rank 0: each task's number of ranks, checked to be whole numbers >= 1."""
        if self.ranks is None:
            return np.full(n, self.per_task or 1, np.int64)
        if ":" in self.ranks:
            call = invoker(resolve(self.ranks), source.call)
            values = ((tid, call, payload) for tid, payload in source.tasks())
        elif source.call != CALL_KEYWORDS:
            raise UsageError(f"--ranks {self.ranks}: a column name needs --params; give a "
                             "function as module:function instead")
        else:
            values = ((tid, None, row) for tid, row in source.tasks())
        sizes = []
        for tid, call, payload in values:
            try:
                k = call(payload) if call else payload.get(self.ranks)
            except Exception as exc:
                raise UsageError(f"--ranks {self.ranks} failed on {source.describe(tid)}: "
                                 f"{exception_line(exc)}") from None
            if call is None and self.ranks not in payload:
                raise UsageError(f"--ranks {self.ranks}: {source.describe(tid)} has no column "
                                 f"{self.ranks!r} (columns: {', '.join(payload)})")
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise UsageError(f"--ranks {self.ranks}: {source.describe(tid)} asks for {k!r} "
                                 "ranks; a size must be a whole number >= 1")
            sizes.append(int(k))
        return np.array(sizes, np.int64)


def takes_comm(fn: Callable) -> bool:
    """Whether fn has a parameter called `comm` (it is then called on all ranks of its group)."""
    try:
        return "comm" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def needs_groups(world: World, spec: GroupSpec, fn: Callable, source: Source) -> bool:
    """Collective: whether a run takes the parallel-task engine: sizes other than
    --ranks-per-task 1 are given, a command uses a group placeholder ({mpirun} on one rank is
    allowed; task-file lines are read on rank 0), or a function with a `comm` parameter is
    given --ranks-per-task 1 (a communicator of its own rank). Without a size option a
    function runs on one rank as always (a `comm` column of --params stays an argument)."""
    if spec.ranks is not None or (spec.per_task or 1) > 1:
        return True
    if not isinstance(fn, CommandRunner):
        return spec.given and takes_comm(fn)
    template = getattr(source, "template", None)
    if template is not None:
        return any(p in template for p in GROUP_PLACEHOLDERS)
    found = False
    if world.rank == 0:   # a task file: its lines are the commands
        try:
            found = any(p in text for _, text in source.lines() for p in GROUP_PLACEHOLDERS)
        except UsageError:
            pass   # the same error stops the run in count()
    return world.comm.bcast(found, root=0)


def plan(world: World, spec: GroupSpec, fn: Callable, source: Source, n: int,
         isolate: bool, timeout: float | None) -> np.ndarray | None:
    """Collective: the task sizes (rank 0; None on the others), after checking on rank 0 that
    every task fits the job's worker ranks and that a function given k > 1 takes `comm`. Bad input
    ends every rank alike, before anything runs."""
    error, sizes = None, None
    command = isinstance(fn, CommandRunner)
    if not command and (isolate or timeout is not None):
        error = ("--isolate and --timeout cannot apply to Python functions on k ranks: they run "
                 "a task in a child process, which cannot take part in MPI; use them with "
                 "command tasks ({mpirun} programs are killed on every host at --timeout)")
    elif world.rank == 0:
        try:
            sizes = spec.sizes(source, n)
            workers = max(world.size - 1, 1)   # one rank alone runs its tasks itself
            wide = np.flatnonzero(sizes > workers)
            if len(wide):
                t = int(wide[0])
                raise UsageError(f"{source.describe(t)} needs {sizes[t]} ranks but the job has "
                                 f"{workers} worker rank{'s' * (workers > 1)} (rank 0 schedules): "
                                 f"start it with at least {sizes[t] + 1} ranks")
            if not command and not takes_comm(fn) and (sizes > 1).any():
                t = int(np.flatnonzero(sizes > 1)[0])
                raise UsageError(f"{source.describe(t)} asks for {sizes[t]} ranks but "
                                 f"{getattr(fn, '__qualname__', fn)} has no `comm` parameter, "
                                 "so it could not use them: add `comm` (an mpi4py communicator "
                                 "of the task's ranks) or run it on one rank")
        except UsageError as exc:
            error = str(exc)
    world.agree(error)
    return sizes


# --- packing ----------------------------------------------------------------------------------

class Placement:
    """Which worker ranks are free, by host; takes groups on as few hosts as possible. Hosts are
    kept in buckets by their number of free ranks, so a take costs O(ranks per host), not
    O(hosts): the master at 12,288 ranks (and the model in scaling/simulate.py) stays fast."""

    def __init__(self, hosts: dict[int, str]):
        self.host_of = hosts
        self.free: dict[str, list[int]] = {}
        for rank in sorted(hosts):
            self.free.setdefault(hosts[rank], []).append(rank)
        widest = max((len(r) for r in self.free.values()), default=0)
        self.by_free: list[dict[str, None]] = [{} for _ in range(widest + 1)]   # ordered sets
        for host, ranks in self.free.items():
            self.by_free[len(ranks)][host] = None
        self.count = len(hosts)

    def take(self, k: int) -> list[int] | None:
        """k free ranks (the root first), or None if fewer are free."""
        if k > self.count:
            return None
        by_free, members = self.by_free, []
        best = next((c for c in range(k, len(by_free)) if by_free[c]), None)
        order = [next(iter(by_free[best]))] if best is not None else [   # best fit: one host
            h for c in range(len(by_free) - 1, 0, -1) for h in by_free[c]]   # else the emptiest first
        for host in order:
            ranks = self.free[host]
            n = min(k - len(members), len(ranks))
            del by_free[len(ranks)][host]
            members += ranks[:n]
            del ranks[:n]
            by_free[len(ranks)][host] = None
            if len(members) == k:
                break
        self.count -= k
        return members

    def give(self, members: Iterable[int]) -> None:
        """Free these ranks again."""
        for rank in members:
            host = self.host_of[rank]
            ranks = self.free[host]
            del self.by_free[len(ranks)][host]
            ranks.insert(int(np.searchsorted(ranks, rank)), rank)
            self.by_free[len(ranks)][host] = None
            self.count += 1


@dataclass
class Scheduler:
    """Tasks waiting by size, placed larger first under a packing rule (see the module doc).

    Pure bookkeeping, no MPI: the master drives it, and so does scaling/simulate.py's model."""

    placement: Placement
    packing: str = "backfill"
    waiting: dict[int, deque] = field(default_factory=dict)   # size -> deque of (id, payload)
    blocked_since: float | None = None   # when the largest waiting task last failed to fit
    finished: int = 0
    busy: float = 0.0                    # seconds of finished tasks (each counted once)

    def add(self, task: tuple[int, Any], size: int, first: bool = False) -> None:
        queue = self.waiting.setdefault(size, deque())
        queue.appendleft(task) if first else queue.append(task)

    def __len__(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def done(self, seconds: float) -> None:
        self.finished += 1
        self.busy += seconds

    def ready(self, now: float) -> list[tuple[tuple[int, Any], list[int]]]:
        """The tasks to start now, with their ranks."""
        started = []
        sizes = sorted((k for k, q in self.waiting.items() if q), reverse=True)
        for i, size in enumerate(sizes):
            queue = self.waiting[size]
            while queue:
                members = self.placement.take(size)
                if members is None:
                    break
                started.append((queue.popleft(), members))
                if i == 0:
                    self.blocked_since = None
            if queue and not self.may_overtake(i, now):
                break
        return started

    def may_overtake(self, i: int, now: float) -> bool:
        """Whether smaller tasks may start while the waiting tasks of the i-th largest size do not fit."""
        if self.packing == "greedy":
            return True
        if self.packing == "strict":
            return False
        if i:   # only the largest waiting task is protected
            return True
        if self.blocked_since is None:
            self.blocked_since = now
        patience = self.busy / self.finished if self.finished else float("inf")
        return now - self.blocked_since < patience


# --- the master and the workers -----------------------------------------------------------------

def node_name() -> str:
    """This rank's node as the batch system names it (Slurm's node name), else its host name."""
    import socket

    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def root_value(value: Any) -> Any:
    """A parallel run's invoke as job.py sees it: what a task's root returned, as it is kept
    (--out wraps it, as any invoke, to turn the value into arrays and journal it)."""
    return value


def execute(world: World, fn: Callable, call: str, source: Source, ids: Sequence[int],
            sizes: np.ndarray | None, packing: str, log: TaskLog, stop: Stop, retries: int = 0,
            progress: Progress | None = None, store: Callable[[Any], Any] = root_value,
            costs: np.ndarray | None = None) -> dict[int, tuple[int, int]]:
    """Run the tasks `ids` of `source` on groups of ranks (collective over world); sizes and costs
    (longest first within a size, so the last tasks to start are the shortest) on rank 0;
    store turns a root's return value into what is recorded (root_value, or --out's wrap of it).
    Returns, on every rank, the retried tasks: task id -> (root rank of the last try, tries)."""
    nodes = world.comm.allgather(node_name())
    order = ids if costs is None or world.rank else longest_first(ids, costs)
    if world.size == 1:   # every task has one rank: this one
        group = GroupCall(world, fn, call, log, store)
        group.members, group.hosts = [0], nodes
        tasks = tasks_of(source, order)
        if progress:
            progress.start(len(order))
            tasks = watched(tasks, log, progress)
        run_with_retries(log, tasks, source, group.root, stop, retries)
        return {}
    if world.rank == 0:
        outcome = serve(world, source, order, sizes, packing, nodes, stop, Retries(retries), progress)
    else:
        work(world, GroupCall(world, fn, call, log, store), log, stop)
        outcome = None
    return world.comm.bcast(outcome, root=0) if retries else {}


def serve(world: World, source: Source, ids: Sequence[int], sizes: np.ndarray, packing: str,
          nodes: list[str], stop: Stop, retries: Retries,
          progress: Progress | None) -> dict[int, tuple[int, int]]:
    """The master: place tasks as ranks free up, until all ran or stop says no more; then tell
    every worker to leave. It holds every task to run (packing needs them all at hand: runs of
    parallel tasks are thousands of tasks, not the millions of one-rank runs, which stream)."""
    comm = world.comm
    scheduler = Scheduler(Placement({r: nodes[r] for r in range(1, world.size)}), packing)
    for task in tasks_of(source, ids):
        scheduler.add(task, int(sizes[task[0]]))
    running: dict[int, tuple[list[int], Any, float]] = {}   # task id -> (members, payload, start)
    command = None
    if progress:
        progress.start(len(ids))
    status = MPI.Status()
    while True:
        if not stop.before_task(clock()):
            for (tid, payload), members in scheduler.ready(clock()):
                command = isinstance(payload, CommandTask) if command is None else command
                hosts = [nodes[r] for r in members]
                for rank in members[:1] if command else members:
                    comm.send((tid, payload, members, hosts), rank, ASSIGN)
                running[tid] = (members, payload, clock())
                if tid in retries.tries:
                    retries.last[tid] = members[0]
        if not running:
            break
        world.poll(MPI.ANY_SOURCE, DONE, status)
        tid, failed, busy, halted = comm.recv(source=status.Get_source(), tag=DONE)
        if halted:
            stop.halt(f"rank {status.Get_source()} had to stop (its journal cannot be written)")
        members, payload, _ = running.pop(tid)
        scheduler.placement.give(members)
        scheduler.done(busy)
        stop.observe(1, failed, busy)
        if failed:
            retries.failed([(tid, payload)], members[0])
            if retries.queue:   # tried again first, on whatever ranks are free
                retries.queue.popleft()
                retries.tries[tid] += 1
                scheduler.add((tid, payload), len(members), first=True)
        if progress:
            progress.update(stop.done, stop.failed, len(running))
    for rank in range(1, world.size):
        comm.send(None, rank, ASSIGN)
    return retries.outcome()


def work(world: World, group: "GroupCall", log: TaskLog, stop: Stop) -> None:
    """A worker: run what the master assigns, as root or member, until it says leave. Between
    tasks it waits sleeping (backoff up to STEP_ASIDE), so ranks reserved for an MPI program, or
    idle while a group forms, leave the CPU to the work. A root reports whether stop halted
    this rank (its journal cannot be written), so the master starts no more tasks."""
    comm = world.comm
    committed = Stop()   # the master decided these tasks run: every member runs them or none does
    while True:
        world.poll(0, ASSIGN, max_pause=STEP_ASIDE)
        message = comm.recv(source=0, tag=ASSIGN)
        if message is None:
            return
        tid, payload, members, hosts = message
        if members[0] != world.rank:
            error = group.member(tid, payload, members)
            if error is None:
                continue
            log.groups[tid] = (members, hosts)   # stuck: this rank's record of the task
            log.run([(tid, payload)], reraise(error), clock, committed)
        else:
            group.tid, group.members, group.hosts = tid, members, hosts
            if len(members) > 1:   # before the record: the journal may flush it at once
                log.groups[tid] = (members, hosts)
            _, failed, busy = log.run([(tid, payload)], group.root, clock, committed)
        if group.stuck:   # the job ends here, as at --grace: journal flushed, exit 75
            stop.expired(group.stuck)
        comm.send((tid, failed, busy, stop.halted), 0, DONE)


class GroupCall:
    """How a worker runs its part of a parallel task: `root` (invoked through TaskLog.run, so the
    row, result and failure are recorded as for any task) and `member` for the others."""

    def __init__(self, world: World, fn: Callable, call: str, log: TaskLog,
                 store: Callable[[Any], Any] = root_value):
        self.world, self.log = world, log
        self.tid = -1
        self.stuck: str | None = None   # why this rank must end the job (stuck_message)
        self.store = store
        self.members: list[int] = []
        self.hosts: list[str] = []
        self.comm_fn = not isinstance(fn, CommandRunner) and takes_comm(fn)
        if isinstance(fn, CommandRunner):
            self.runner = CommandRunner(fn.output_dir, fn.tail_lines, fn.tail_bytes, fn.timeout,
                                        env=clean_environment(), deadline=GroupDeadline)
        self.fn = with_comm(fn, call) if self.comm_fn else invoker(fn, call)

    def communicator(self, members: list[int]) -> MPI.Intracomm:
        """The task's communicator, made by its members alone (MPI_Comm_create_group)."""
        world = self.world.comm
        group = world.Get_group().Incl(members)
        try:
            return world.Create_group(group, tag=CREATE)
        finally:
            group.Free()

    def root(self, payload: Any) -> Any:
        if not self.comm_fn:
            if isinstance(payload, CommandTask):
                return self.store(self.run_command(payload))
            return self.store(self.fn(payload))
        comm = self.communicator(self.members)
        error = None
        try:
            value = self.fn(payload, comm)
        except BaseException as exc:   # every way out of a task, as TaskLog.run
            error, value = exc, None
        failures = []
        waited = time.monotonic()
        for rank in self.members[1:]:
            if error is None:
                self.world.poll(rank, OUTCOME, max_pause=STEP_ASIDE)
            elif not arrives(self.world, rank, OUTCOME, waited + STUCK_AFTER - time.monotonic()):
                self.stuck = stuck_message(self.tid, self.members, error)
                raise error   # the task's failure; work() then ends the job
            failures.append(self.world.comm.recv(source=rank, tag=OUTCOME))
        comm.Free()
        for rank, failure in zip(self.members[1:], failures):
            if failure is not None:   # it waits to hear that the whole group is done
                self.world.comm.send(None, rank, ACK)
        if error is not None:
            raise error
        failure = next((f for f in failures if f is not None), None)
        if failure is not None:
            raise member_error(failure)
        return self.store(value)

    def member(self, tid: int, payload: Any, members: list[int]) -> BaseException | None:
        """Run a member's part; returns what it raised if its group is stuck (self.stuck)."""
        comm = self.communicator(members)
        failure = None
        try:
            self.fn(payload, comm)   # a member's return value is dropped
        except BaseException as exc:
            failure, error = self.log.failure(tid, exc), exc
        self.world.comm.send(failure, members[0], OUTCOME)
        if failure is not None:
            if not arrives(self.world, members[0], ACK, STUCK_AFTER):
                self.stuck = stuck_message(tid, members, error)
                return error
            self.world.comm.recv(source=members[0], tag=ACK)
        comm.Free()
        return None

    def run_command(self, task: CommandTask) -> Any:
        program = launched_program(task.command)
        if program is not None and not shutil.which(program):
            raise CommandFailed(127, f"command not found: {program} (the program {{mpirun}} "
                                "was to start)", "", "")
        hostfile = write_hostfile(self.hosts)
        try:
            command = expand(task.command, self.hosts, hostfile)
            return self.runner(task._replace(command=command))
        finally:
            os.unlink(hostfile)


def stuck_message(tid: int, members: list[int], error: BaseException) -> str:
    """Why a rank ends the job: it raised in a parallel task and the rest of its group did not
    finish the task within STUCK_AFTER seconds (they wait, presumably, in a collective of the
    task it never reached, which no MPI call can end)."""
    return (f"task {tid}: this rank raised {exception_line(error)}, and the other ranks "
            f"of its group {members} did not finish the task within {STUCK_AFTER:g} s: they "
            "wait, presumably, in a collective of the task that this rank never reached, which no "
            f"MPI call can end; task {tid} is recorded as failed and the job ends")


def reraise(error: BaseException) -> Callable[[Any], Any]:
    """An invoke that raises error again: a stuck member's record of the task's failure."""
    def again(payload: Any) -> Any:
        raise error
    return again


def arrives(world: World, source: int, tag: int, seconds: float) -> bool:
    """Whether a message from source with tag arrives within seconds (probing with backoff)."""
    end, pause = time.monotonic() + seconds, 1e-4
    while not world.comm.Iprobe(source, tag):
        if time.monotonic() > end:
            return False
        time.sleep(pause)
        pause = min(pause * 2, STEP_ASIDE)
    return True


def with_comm(fn: Callable, call: str) -> Callable[[Any, MPI.Comm], Any]:
    """fn called with a payload the way the source says, and comm as a keyword."""
    if call == CALL_ONE:
        return lambda p, comm: fn(p, comm=comm)
    if call == CALL_STAR:
        return lambda p, comm: fn(*p, comm=comm)
    return lambda p, comm: fn(**p, comm=comm)


def member_error(failure: Failure) -> Exception:
    """Another member's failure, raised on the root under the original type's name, its
    traceback (headed with that member's rank and host) attached as a note."""
    exc = remote_class(failure.type)(failure.message)
    exc.add_note(failure.traceback.rstrip())
    return exc


# --- MPI programs as command tasks -------------------------------------------------------------

def clean_environment() -> dict[str, str]:
    """This process's environment less the enclosing MPI job's identity (OMPI_*, PMIX_*, PMI_*,
    HYDRA_*), so a launcher started from a rank starts a new job instead of refusing to nest."""
    return {k: v for k, v in os.environ.items() if not k.startswith(NESTED_MPI) or k in KEPT_MPI}


def slots(hosts: Sequence[str]) -> list[tuple[str, int]]:
    """(host, ranks on it) in the order the group lists them."""
    return list(Counter(hosts).items())


@cache
def mpi_flavour(mpirun: str) -> str:
    """'openmpi' or 'mpich' (Hydra), from `mpirun --version`."""
    try:
        text = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30,
                              env=clean_environment()).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "openmpi"
    return "openmpi" if "Open MPI" in text or "OpenRTE" in text else "mpich"


def launcher(hosts: Sequence[str], hostfile: str) -> str:
    """The {mpirun} line for ranks on these hosts (one entry per rank): an srun job step inside a
    Slurm allocation, else Open MPI's mpirun or MPICH's mpiexec with a host list. The step
    overlaps the one the mtcmpi ranks run in (--overlap: those ranks step aside, and without it
    the step waits for CPUs they hold, "step creation temporarily disabled", for ever); --exact
    gives it only the CPUs asked for and --mem=0 claims no memory, so concurrent steps fit."""
    k, per_host = len(hosts), slots(hosts)
    names = ",".join(h for h, _ in per_host)
    if os.environ.get("SLURM_JOB_ID") and shutil.which("srun"):
        spread = (f"--ntasks-per-node={per_host[0][1]}" if len({c for _, c in per_host}) == 1
                  else "--distribution=arbitrary")
        env = f"SLURM_HOSTFILE={hostfile} " if "arbitrary" in spread else ""
        return (f"{env}srun --overlap --exact --mem=0 --nodes={len(per_host)} --ntasks={k} "
                f"{spread} --nodelist={names} --kill-on-bad-exit=1")
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec") or "mpirun"
    listed = ",".join(f"{h}:{c}" for h, c in per_host)
    if mpi_flavour(mpirun) == "openmpi":
        return f"{mpirun} -n {k} --host {listed}"
    return f"{mpirun} -n {k} -hosts {listed}"


def expand(command: str, hosts: Sequence[str], hostfile: str) -> str:
    """A rendered command with the group placeholders filled in."""
    names = ",".join(h for h, _ in slots(hosts))
    for key, value in (("{np}", str(len(hosts))), ("{hosts}", names), ("{hostfile}", hostfile)):
        command = command.replace(key, value)
    if "{mpirun}" in command:
        command = command.replace("{mpirun}", launcher(hosts, hostfile))
    return command


def launched_program(command: str) -> str | None:
    """The program a command starts with {mpirun}, if it reads plainly (no shell syntax)."""
    try:
        words = shlex.split(command.split("{mpirun}", 1)[1]) if "{mpirun}" in command else []
    except ValueError:
        return None
    return words[0] if words and not any(c in words[0] for c in "$`=();|&<>") else None


def write_hostfile(hosts: Sequence[str]) -> str:
    """A file naming one host per rank of the group (the format of srun's SLURM_HOSTFILE, MPICH's
    machinefile and Open MPI's hostfile); the caller removes it."""
    fd, path = tempfile.mkstemp(prefix="mtcmpi-", suffix=".hosts")
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{h}\n" for h in hosts))
    return path


class GroupDeadline(CommandDeadline):
    """--timeout for an MPI program: SIGTERM to the launcher's process group first, so mpirun and
    srun stop every process of the program on every host, then SIGKILL after KILL_GRACE."""

    def expire(self, pgid: int):
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        else:
            end = time.monotonic() + KILL_GRACE
            while time.monotonic() < end and group_alive(pgid):
                time.sleep(0.02)
        kill_group(pgid)
        return super().expire(pgid)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
