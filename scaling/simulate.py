"""A discrete-event model of the mtcmpi engine, to plan weak scaling past this machine.

    python scaling/simulate.py [--measured DIR/weak.csv] [--quick] [--service S] [--outdir DIR]
                               [--sweep-ranks 12288,...]
    python scaling/simulate.py --groups      parallel tasks only: packing sizes 1/2/4/8

--groups models the packing of parallel tasks (mtcmpi/groups.py) with the master's own Scheduler
and Placement, at 1,024 and 12,288 ranks, 48 per host: a seeded mix of sizes 1/2/4/8 evenly and
durations uniform(0.5, 1.5) s, 20 mean task lengths of work per worker; the master spends SERVICE
+ ITEM per member to start a task and SERVICE per end, messages take 0.2 ms. It prints packing
efficiency (rank-seconds / (workers x makespan)) for backfill, backfill with costs (each size
longest first), greedy and strict beside the bound (simulate.packing_bound), and
RESULT packing_eff_<ranks>=.. packing_eff_cost_<ranks>=.. bound_<ranks>=.. (about 15 s).

Why: the paper's benchmark (Lunacek et al., IEEE Cluster 2013: 10 tasks per core, each sleeping
uniform(27, 33) s, up to 12,288 cores) cannot be run on a 2-core box. This model replays the
engine's protocol event by event with constants fitted from the runs scaling/weak.py measured
here, shows its error against those runs, predicts the paper's core counts (and 100,000), and
answers: how short may tasks be at a given rank count and still keep 0.99, and what do
chunking, prefetch, a pre-assigned first round and sub-masters buy. A full run takes about a
minute here (mostly the task-length sweep); --quick takes seconds.

The model. static: every rank runs its contiguous block (Static.share) back to back; static_cost:
greedy longest-first into the least-loaded rank (LPT), no messages. Self-scheduling (dynamic,
guided, cost, futures): a worker's request reaches the master after `latency`; the master answers
requests one at a time in arrival order, `service` seconds each (+ `item` per extra task in a
chunk); the answer takes `latency` back; the worker runs the chunk (each task its duration +
`overhead`) and asks again after it, or before it when it asks ahead. The first round is
scattered (each worker starts on its first chunk with no request) and the ask-ahead rule is the
engine's (chunks < 10 ms, or while more than FAR x workers tasks remain; with costs until none
do); chunk sizes are the engine's own: the simulated master feeds the reports a real master
would get to mtcmpi.policies' observe / chunk_size / observe_service. cost = dynamic handing
out the longest tasks first; futures = mpi4py.futures (chunk 1, no ask-ahead, its own service
time, requests for the first round). Variants (see VARIANT_NOTES): the engine before the
scattered first round and the far ask-ahead, without either, no chunking, always ask ahead,
and a hierarchy (one sub-master per GROUP ranks self-schedules its workers; when its workers
wait it asks rank 0 for one task per waiting worker; rank 0 answers in arrival order, longest first). Not modelled: the results-file write (file-
system I/O the paper's benchmark did not have; store_s here is printed as a + b x ranks), the
stop messages and gather at the end (milliseconds), contention in the network.

Constants (seconds), fitted from the measured rows and printed with their sample counts:
overhead = median(task end - start - nominal duration); ready = median first task start of static
ranks after the engine started; service here = median step between the sorted first-task starts
of a dynamic/cost run's workers (the master answering the first round one by one; on this
oversubscribed box mostly process wake-ups); latency = (median idle gap between consecutive
tasks of a dynamic/cost worker - service) / 2 (it holds the master's wake-up from its backoff
sleep); futures_service = mpi4py.futures' master time per task, the value whose modelled
makespans fit its measured runs best (it shares the other constants). Without measured rows:
the Machine defaults (about what this machine measures). For the cluster predictions the
master's service is --service (default SERVICE: the unchunked 1 master + 1 worker dispatch cost
measured here, 100-120k tasks/s, which is what a master with a core to itself costs; the first-
round step here is not a cluster figure), mpi4py.futures' is FUTURES_SERVICE (its 1 + 1 rate),
item is ITEM and start-up is the paper's mpi_init_s (past 12,288 cores a power law fitted to
it). The measured
makespan the model is compared with is the last task end after the engine started, from each
run's results file (engine_s without one: mpi4py.futures), which is what weak.py reports as
engine_s; its wrap_s (last answers, journal flush) and store_s are not modelled.

Efficiency. eff_engine = ideal / engine time (start-up excluded), ideal = sum of task durations /
workers (ranks for static; ranks - 1 - sub-masters for self-scheduling): weak.py's eff_engine,
and what RESULT's eff_* are. eff_with_startup = ideal / (start-up + engine), the paper's measure.
startup_budget_s = the longest start-up that keeps eff_with_startup >= 0.99 (negative: the
engine alone misses it). With the paper's 10.6 s MPI start-up at 12,288 cores, 300 s of work
cannot exceed 300 / 310.6 = 0.966 however good the schedule: 0.99 needs start-up <= ~3 s.
The paper's dynamic figures count the master's core as lost (10 tasks per core on cores - 1
workers: 0.91 at 12 cores is 11/12 of a balanced run); eff_ranks does too.

Output: tables on stdout and DIR/simulate.csv (DIR: the measured CSV's directory, or --outdir),
one row per modelled run, columns:
  scenario          here (a measured run: same tasks, ranks and policy, constants fitted here),
                    cluster (every policy at the paper's core counts and 100,000; time_scale 1),
                    sweep (every variant at --sweep-ranks, mean task length varied), shortest (per
                    variant and rank count, a copy of the sweep row of the shortest length from
                    which every longer one keeps eff_engine >= 0.99; absent if none does)
  ranks, workers    MPI ranks (cores); ranks that run tasks
  policy            static, static_cost, dynamic, guided, cost, futures, or a variant name
  tasks, time_scale, mean_task_s, ideal_s   as in weak.csv (time_scale: task s = uniform(27, 33) x it)
  startup_s         here: measured; else the paper's mpi_init_s at that core count
  engine_s          modelled engine time: engine start .. last task end
  eff_engine, eff_with_startup, startup_budget_s   see Efficiency
  eff_ranks         sum of task time / (all ranks x engine_s): counts the masters' cores as lost
  measured_s, error_pct   here only: the measured makespan, 100 x (model - measured) / measured
  paper_eff         cluster only: the paper's mpi static / dynamic efficiency at that core count
Last line: RESULT cores=12288 eff_static=.. eff_dynamic=.. eff_cost=.. paper_dynamic=0.93
eff_cost_with_paper_startup=.. startup_budget_s=.. (eff_* engine-only, as in weak.py's RESULT).
"""
from __future__ import annotations

import argparse
import csv
import heapq
import math
import os
import sys
from collections import deque
from dataclasses import dataclass, replace
from itertools import accumulate

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from weak import PAPER, ROOT  # noqa: E402  (the paper's table, the repository)

sys.path.insert(0, ROOT)
from kernels.sleep import HIGH, LOW, durations  # noqa: E402
from mtcmpi.costs import longest_first, lpt  # noqa: E402
from mtcmpi.policies import Static, parse_schedule  # noqa: E402
from mtcmpi.protocol import FAR  # noqa: E402

DEFAULT_DIR = os.path.join(ROOT, "scaling", "out", "weak")
TARGET = 0.99
TASKS_PER_WORKER = 10
SERVICE = 1e-5          # master s/message with a core to itself: 100-120k tasks/s unchunked, here
ITEM = 1e-6             # master s per extra task in a chunk: auto-chunked ~1M tasks/s, here
FUTURES_SERVICE = 1 / 2100   # MPIPoolExecutor.map chunksize 1: ~2.1k tasks/s (reference/peers.md)
GROUP = 128             # ranks per sub-master in the hierarchical variant
CLUSTER_CORES = 100_000  # beyond the paper's table
SWEEP_TASK_S = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)   # mean task lengths tried (s)
QUICK_TASK_S = (0.1, 0.3, 1.0, 3.0, 30.0)                      # the same with --quick
REFINE_STEPS = 4        # bisections of log(task length) between the last miss and first hit


@dataclass(frozen=True)
class Machine:
    """The model's constants, seconds: see the module docstring for where each comes from."""

    service: float = 1e-4
    latency: float = 2e-4
    overhead: float = 2.5e-4
    ready: float = 2e-4
    futures_service: float = FUTURES_SERVICE
    item: float = ITEM


@dataclass(frozen=True)
class Plan:
    """How tasks reach workers in one simulated run."""

    name: str
    schedule: str = "dynamic"     # static | dynamic | guided
    longest_first: bool = False   # dispatch (or, static: partition) longest tasks first
    chunk: int | None = None      # None: the engine's automatic chunk
    prefetch: str = "auto"        # auto | 0 | 1 (the engine's --prefetch)
    preassigned: bool = True      # the engine's scattered first round: no requests for it
    far: bool = True              # the engine's ask-ahead while much is left (protocol.FAR)
    group: int = 0                # ranks per sub-master group; 0: one master
    futures: bool = False         # mpi4py.futures' master instead of mtcmpi's


POLICIES = {
    "static": Plan("static", "static"),
    "static_cost": Plan("static_cost", "static", longest_first=True),
    "dynamic": Plan("dynamic"),
    "guided": Plan("guided", "guided"),
    "cost": Plan("cost", longest_first=True),
    "futures": Plan("futures", chunk=1, prefetch="0", preassigned=False, far=False, futures=True),
}
VARIANTS = [   # the short-task question; see VARIANT_NOTES
    POLICIES["dynamic"], POLICIES["cost"],
    Plan("cost-before", longest_first=True, preassigned=False, far=False),
    Plan("cost-scatter", longest_first=True, preassigned=False),
    Plan("cost-far", longest_first=True, far=False),
    Plan("cost+chunk1", longest_first=True, chunk=1),
    Plan("cost+prefetch1", longest_first=True, prefetch="1"),
    Plan(f"cost+hier{GROUP}", longest_first=True, group=GROUP),
    POLICIES["static_cost"],
]
VARIANT_NOTES = f"""\
  dynamic, cost: the engine as it is (first round scattered, no requests for it; ask ahead for
    chunks < 10 ms, and for any chunk while more than {FAR} x workers tasks remain (cost: any))
  cost-before: the engine before both (first round by request; ask ahead only < 10 ms)
  cost-scatter / cost-far: without the scattered first round / without the far ask-ahead
  +chunk1: no chunking; +prefetch1: always ask ahead, to the very last chunk
  +hier{GROUP}: one sub-master per {GROUP} ranks forwards its waiting workers' demand to rank 0
  static_cost: no master at all (LPT partition from known costs), for reference"""


# ---------------------------------------------------------------- workload and schedules

def workload(n: int, time_scale: float, seed: int, exact: bool) -> np.ndarray:
    """Task durations: exact = the harness's own (kernels.sleep.duration, slow past ~1e5 tasks),
    else the same distribution from numpy (uniform(27, 33) x time_scale)."""
    if exact:
        return np.array(durations(n, time_scale, seed))
    return np.random.default_rng(seed).uniform(LOW, HIGH, n) * time_scale


def workers_of(plan: Plan, ranks: int) -> int:
    """Ranks that run tasks: all for static; else all but rank 0 and the sub-masters."""
    if plan.schedule == "static":
        return ranks
    return ranks - 1 - sub_masters(ranks, plan.group)


def sub_masters(ranks: int, group: int) -> int:
    """Groups of `group` ranks (each with one sub-master) that ranks - 1 make; 0 without groups."""
    return math.ceil((ranks - 1) / group) if group and ranks - 1 > group else 0


def makespan(work: np.ndarray, ranks: int, plan: Plan, m: Machine) -> float:
    """Last task end, seconds after the engine started, of `work` (in task-id order) under plan."""
    if plan.schedule == "static" and plan.longest_first:
        return m.ready + lpt_partition(work + m.overhead, ranks)
    if plan.schedule == "static":
        return m.ready + static_blocks(work + m.overhead, ranks)
    order = work[longest_first(np.arange(len(work)), work)] if plan.longest_first else work
    return max(self_schedule(order, ranks, plan, m), default=m.ready)


def static_blocks(cost: np.ndarray, ranks: int) -> float:
    """Longest sum over the contiguous blocks Static.share gives each rank."""
    firsts = [Static().share(r, ranks, len(cost)).start for r in range(ranks)]
    return float(np.add.reduceat(cost, firsts).max()) if len(cost) >= ranks else float(cost.max(initial=0))


def lpt_partition(cost: np.ndarray, ranks: int) -> float:
    """Longest load after greedy longest-first into the least-loaded rank: static with costs."""
    return max(float(cost[share].sum()) for share in lpt(np.arange(len(cost)), cost, ranks))


def groups_of(ranks: int, group: int) -> list[int]:
    """Server of each worker: 0 (rank 0) with one master, else 1 + its group, groups as even as
    numpy.array_split makes them."""
    n_sub = sub_masters(ranks, group)
    workers = ranks - 1 - n_sub
    if not n_sub:
        return [0] * workers
    return [1 + g for g, part in enumerate(np.array_split(np.arange(workers), n_sub)) for _ in part]


def take(pool: deque, k: int) -> tuple[int, int]:
    """Up to k tasks [lo, hi) of dispatch order from the head range of a pool of [lo, hi) ranges."""
    head = pool[0]
    lo, hi = head[0], min(head[0] + k, head[1])
    head[0] = hi
    if hi == head[1]:
        pool.popleft()
    return lo, hi


def self_schedule(order: np.ndarray, ranks: int, plan: Plan, m: Machine) -> list[float]:
    """Event-by-event master/worker model (see the module docstring); returns each worker's
    last task end.

    Servers: 0 is rank 0, 1.. the sub-masters. Events are (time, code) in one heap, handled in
    time order, so every server answers in arrival order: code < W is worker `code` asking its
    server; W + s is sub-master s asking rank 0 for tasks; W + S + s is rank 0's answer arriving."""
    server = groups_of(ranks, plan.group)
    W, S = len(server), max(server, default=0) + 1
    prefix = list(accumulate(order.tolist(), initial=0.0))
    service = m.futures_service if plan.futures else m.service
    pol = [parse_schedule(plan.schedule, plan.chunk, plan.prefetch) for _ in range(S)]
    below = pol[0].prefetch_below if pol[0].prefetch else -math.inf
    count = [server.count(s) for s in range(S)]
    limit = 0 if plan.longest_first else FAR * W   # the engine's `far`: tasks left, anywhere
    pools = [deque([[0, len(order)]] if s == 0 and len(order) else []) for s in range(S)]
    size = [len(order)] + [0] * (S - 1)
    free = [0.0] * S
    parked: list[deque] = [deque() for _ in range(S)]
    asked = [0] * S                                  # tasks a sub-master has asked rank 0 for
    incoming: list[tuple[int, int]] = [(0, 0)] * S   # rank 0's answer on its way
    end, last_k, last_busy = [m.ready] * W, [0] * W, [0.0] * W
    report = [(0, 0.0)] * W
    heap: list[tuple[float, int]] = []

    def assign(w: int, lo: int, hi: int, arrives: float, far: bool) -> None:
        """Worker w runs tasks [lo, hi) once they arrived and its current chunk ended; it asks
        again before running them (ask-ahead) or after, reporting as the engine's worker does."""
        busy = prefix[hi] - prefix[lo] + (hi - lo) * m.overhead
        start = max(arrives, end[w])
        end[w] = start + busy
        if far or last_busy[w] < below:
            report[w], sent = (last_k[w], last_busy[w]), start
        else:
            report[w], sent = (hi - lo, busy), end[w]
        last_k[w], last_busy[w] = hi - lo, busy
        heapq.heappush(heap, (sent + m.latency, w))

    def serve(w: int, s: int, now: float) -> None:
        """Server s answers worker w (arrived by `now`) from its pool; a sub-master with an empty
        pool parks w until rank 0's answer; else an empty answer: w is done."""
        if not size[s]:
            if s and (asked[s] or size[0]):
                parked[s].append(w)
            return
        p = pol[s]
        p.observe(*report[w])
        lo, hi = take(pools[s], p.chunk_size(size[s], count[s]))
        size[s] -= hi - lo
        cost = service + (hi - lo - 1) * m.item
        free[s] = max(now, free[s]) + cost
        p.observe_service(cost)
        assign(w, lo, hi, free[s] + m.latency, plan.far and size[0] + (size[s] if s else 0) > limit)

    def ask(s: int, now: float) -> None:
        """Sub-master s asks rank 0 for one task per parked worker, unless an answer is on its
        way (the workers parked meanwhile are asked for next) or rank 0 has nothing left."""
        if not asked[s] and size[0]:
            asked[s] = len(parked[s])
            heapq.heappush(heap, (now + m.latency, W + s))

    def answer(s: int, now: float) -> None:
        """Rank 0 answers sub-master s with the next tasks of dispatch order (maybe none)."""
        lo, hi = take(pools[0], asked[s]) if size[0] else (0, 0)
        size[0] -= hi - lo
        free[0] = max(now, free[0]) + service + max(hi - lo - 1, 0) * m.item
        incoming[s] = (lo, hi)
        heapq.heappush(heap, (free[0] + m.latency, W + S + s))

    def receive(s: int, now: float) -> None:
        """Rank 0's answer reaches sub-master s: its parked workers are answered first, in order."""
        lo, hi = incoming[s]
        asked[s] = 0
        if hi > lo:
            pools[s].append([lo, hi])
            size[s] += hi - lo
        waiting = parked[s]
        while waiting and size[s]:
            serve(waiting.popleft(), s, now)
        if waiting:
            ask(s, now)

    for w in range(W):
        if plan.preassigned and size[0]:   # the engine's scatter: chunk sizes as the master's
            lo, hi = take(pools[0], pol[0].chunk_size(size[0], W))
            size[0] -= hi - lo
            assign(w, lo, hi, m.ready, plan.far and size[0] > limit)
        elif not plan.preassigned:
            heapq.heappush(heap, (m.ready + m.latency, w))
    while heap:
        now, code = heapq.heappop(heap)
        if code < W:
            s = server[code]
            serve(code, s, now)
            if parked[s]:
                ask(s, now)
        elif code < W + S:
            answer(code - W, now)
        else:
            receive(code - W - S, now)
    return end


# ---------------------------------------------------------------- fit to the measured runs

NUMERIC = ("time_scale", "startup_s", "engine_s", "store_s")   # the weak.csv columns used here


def read_measured(path: str) -> list[dict]:
    """The rows of weak.csv, numbers parsed, results_file made absolute (empty: None), and what
    each results file says (see observe)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in NUMERIC:
            row[key] = float(row[key]) if row[key] else math.nan
        for key in ("ranks", "workers", "tasks", "seed"):
            row[key] = int(row[key])
        name = row.get("results_file") or ""
        row["results_file"] = os.path.join(os.path.dirname(path), name) if name else None
        row.update(observe(row))
    return rows


def observe(row: dict) -> dict:
    """A run's measured makespan (last task end after the engine started; without a results
    file: engine_s, which weak.py reports without the store) and, from its results file,
    samples of the model's constants: overhead (end - start - nominal duration, every task);
    on workers of dynamic/cost runs (one message per task) the idle gaps between tasks and
    the steps between their sorted first starts; static ranks' first starts (ready)."""
    got = {"makespan": row["engine_s"], "overhead": [], "gap": [], "step": [], "ready": []}
    if not row["results_file"]:
        return got
    import h5py   # only the fit reads results files

    with h5py.File(row["results_file"], "r") as f:
        tasks, t0 = f["tasks"][()], float(f.attrs["start_time"])
    nominal = workload(len(tasks), row["time_scale"], row["seed"], exact=True)
    ok = tasks["status"] == 1
    rank, start, end = tasks["rank"][ok], tasks["start"][ok] - t0, tasks["end"][ok] - t0
    got["makespan"] = float(end.max())
    got["overhead"] = (end - start - nominal[ok]).tolist()
    on = {r: np.sort(start[rank == r]) for r in np.unique(rank)}
    ends = {r: np.sort(end[rank == r]) for r in on}
    firsts = np.array([s[0] for s in on.values()])
    if row["policy"] == "static":
        got["ready"] = firsts.tolist()
    elif row["policy"] in ("dynamic", "cost"):
        got["step"] = np.diff(np.sort(firsts)).tolist()
        got["gap"] = [g for r in on for g in (on[r][2:] - ends[r][1:-1])]   # 1st: ask-ahead hides it
    return got


def fit_machine(rows: list[dict]) -> tuple[Machine, list[str]]:
    """The constants for this machine from the measured rows, and one line per constant saying
    how it was found (defaults where the rows say nothing)."""
    base, lines = Machine(), []

    def median(key: str, default: float) -> float:
        values = [x for row in rows for x in row[key]]
        value = float(np.median(values)) if values else default
        lines.append(f"  {key:<9} {value * 1e3:8.3f} ms  " + (f"median of {len(values)} samples"
                                                             if values else "default (no samples)"))
        return value

    overhead, ready = median("overhead", base.overhead), median("ready", base.ready)
    step, gap = median("step", base.service), median("gap", 2 * base.latency + base.service)
    latency = max(gap - step, 0.0) / 2
    lines.append(f"  => service {step * 1e3:.3f} ms (the first-round step), latency "
                 f"{latency * 1e3:.3f} ms ((gap - service) / 2)")
    machine = Machine(service=step, latency=latency, overhead=overhead, ready=ready)
    futures = [row for row in rows if row["policy"] == "futures"]
    if not futures:
        return machine, lines
    machine = replace(machine, futures_service=futures_service(futures, machine))
    lines.append(f"  futures_service {machine.futures_service * 1e3:.3f} ms: mpi4py.futures' time per task "
                 f"that best fits its {len(futures)} runs (least squares of relative error)")
    return machine, lines


def futures_service(rows: list[dict], machine: Machine) -> float:
    """mpi4py.futures' master time per task here: the value on a log grid from 10 us to 30 ms
    whose modelled makespans are closest to the measured ones."""
    def misfit(service: float) -> float:
        m = replace(machine, futures_service=service)
        return sum((twin(row, m)["engine_s"] / row["makespan"] - 1) ** 2 for row in rows)

    return float(min(np.geomspace(1e-5, 3e-2, 36), key=misfit))


def linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of y ~ a + b x by least squares; (mean y, 0) with fewer than two distinct x."""
    if len(np.unique(x)) < 2:
        return float(np.mean(y)) if len(y) else 0.0, 0.0
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def twin(row: dict, machine: Machine) -> dict:
    """The modelled run of a measured row: its tasks (the harness's exact durations), policy,
    ranks and start-up."""
    work = workload(row["tasks"], row["time_scale"], row["seed"], exact=True)
    return prediction(POLICIES[row["policy"]], row["ranks"], row["time_scale"], machine,
                      row["startup_s"], work=work)


# ---------------------------------------------------------------- predictions

def paper_table(path: str) -> list[dict]:
    """The paper's rows: cores and numbers (None where the plot has no point)."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(lines)]


def power_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(c, p) of y ~ c x^p, least squares in log-log."""
    p, log_c = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(log_c)), float(p)


def startup_law(paper: list[dict]) -> tuple[float, float]:
    """(c, p) of the paper's MPI start-up ~ c x cores^p, used beyond its largest run."""
    return power_fit(np.array([r["cores"] for r in paper]), np.array([r["mpi_init_s"] for r in paper]))


def paper_startup(cores: int, paper: list[dict], law: tuple[float, float]) -> float:
    """The paper's mpi_init_s at this core count, else the power law's value."""
    given = {int(r["cores"]): r["mpi_init_s"] for r in paper}
    return given.get(cores, law[0] * cores ** law[1])


def prediction(plan: Plan, ranks: int, time_scale: float, machine: Machine, startup: float,
               seed: int = 0, work: np.ndarray | None = None) -> dict:
    """One modelled run, 10 tasks per worker unless `work` is given, as a simulate.csv row."""
    workers = workers_of(plan, ranks)
    if work is None:
        work = workload(TASKS_PER_WORKER * workers, time_scale, seed, exact=False)
    engine = makespan(work, ranks, plan, machine)
    ideal = float(work.sum()) / workers
    return {"ranks": ranks, "workers": workers, "policy": plan.name, "tasks": len(work),
            "time_scale": time_scale, "mean_task_s": float(work.mean()), "ideal_s": ideal,
            "startup_s": startup, "engine_s": engine, "eff_engine": ideal / engine,
            "eff_with_startup": ideal / (startup + engine), "eff_ranks": ideal * workers / (ranks * engine),
            "startup_budget_s": ideal / TARGET - engine}


def here_rows(rows: list[dict], machine: Machine) -> list[dict]:
    """The model next to every measured row it knows the policy of."""
    out = []
    for row in rows:
        if row["policy"] not in POLICIES:
            continue
        pred, got = twin(row, machine), row["makespan"]
        out.append({"scenario": "here", **pred, "measured_s": got,
                    "error_pct": 100 * (pred["engine_s"] - got) / got})
    return out


def cluster_rows(paper: list[dict], machine: Machine, law: tuple[float, float],
                 cores: list[int]) -> list[dict]:
    """Every policy at the paper's core counts (and beyond), 27-33 s tasks, the paper's start-up."""
    by_cores = {int(r["cores"]): r for r in paper}
    out = []
    for n in cores:
        for plan in POLICIES.values():
            row = {"scenario": "cluster", **prediction(plan, n, 1.0, machine, paper_startup(n, paper, law))}
            ref = by_cores.get(n, {})
            row["paper_eff"] = ref.get(f"mpi_{plan.name}_eff") if plan.name in ("static", "dynamic") else None
            out.append(row)
    return out


def sweep_rows(plan: Plan, ranks: int, machine: Machine, startup: float,
               lengths: tuple[float, ...], refine: int) -> list[dict]:
    """eff_engine of plan at `ranks` for each mean task length (s), then `refine` bisections of
    log(length) between the longest miss and the shortest length from which every longer one
    hits 0.99; the last row repeats that length's row as scenario 'shortest' (none if all miss)."""
    def at(length: float) -> dict:
        return {"scenario": "sweep", **prediction(plan, ranks, length / ((LOW + HIGH) / 2), machine, startup)}

    rows = {x: at(x) for x in lengths}
    hits = [x for x in lengths if all(rows[y]["eff_engine"] >= TARGET for y in lengths if y >= x)]
    if not hits:
        return list(rows.values())
    hi = min(hits)
    lo = max((x for x in lengths if x < hi), default=None)
    for _ in range(refine if lo else 0):
        mid = math.sqrt(lo * hi)
        rows[mid] = at(mid)
        hi, lo = (mid, lo) if rows[mid]["eff_engine"] >= TARGET else (hi, mid)
    return [*rows.values(), {**rows[hi], "scenario": "shortest"}]


# ---------------------------------------------------------------- report

COLUMNS = ["scenario", "ranks", "workers", "policy", "tasks", "time_scale", "mean_task_s", "ideal_s",
           "startup_s", "engine_s", "eff_engine", "eff_with_startup", "eff_ranks", "startup_budget_s",
           "measured_s", "error_pct", "paper_eff"]


def write_csv(path: str, rows: list[dict]) -> None:
    """simulate.csv: COLUMNS, empty where a scenario has no value."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        out.writeheader()
        out.writerows({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS} for row in rows)


def print_fit(rows: list[dict], lines: list[str]) -> None:
    """The fitted constants; start-up here as c x ranks^p and the store as a + b x ranks, with
    their residuals (not used by the model: start-up on a cluster is the paper's, the store is
    left out)."""
    print(f"Constants fitted from {len(rows)} measured runs:")
    print("\n".join(lines))
    if len({r["ranks"] for r in rows}) < 2:
        return
    ranks = np.array([r["ranks"] for r in rows], float)
    startup, store = (np.array([r[k] for r in rows]) for k in ("startup_s", "store_s"))
    c, p = power_fit(ranks, startup)
    a, b = linear_fit(ranks, np.nan_to_num(store))
    for name, residual in ((f"start-up here = {c:.3g} x ranks^{p:.2f} s", startup - c * ranks ** p),
                           (f"store here = {a:.3f} + {b * 1e3:.2f} ms x ranks", store - a - b * ranks)):
        print(f"  {name}; residuals rms {np.sqrt(np.nanmean(residual ** 2)):.3f} s, "
              f"largest {np.nanmax(np.abs(residual)):.3f} s")


def print_here(rows: list[dict]) -> None:
    """Measured and modelled makespan (engine_s - store_s) side by side."""
    print("\nModel vs measured makespan (engine start .. last task end, from the results file):")
    print(f"{'ranks':>6} {'policy':<8} {'tasks':>6} {'task s':>7} {'measured':>9} {'model':>9} {'error':>7}")
    for r in rows:
        print(f"{r['ranks']:>6} {r['policy']:<8} {r['tasks']:>6} {r['mean_task_s']:>7.3f} "
              f"{r['measured_s']:>9.3f} {r['engine_s']:>9.3f} {r['error_pct']:>+6.1f}%")
    if rows:
        print(f"largest |error|: {max(abs(r['error_pct']) for r in rows):.1f}%")


def print_cluster(rows: list[dict], machine: Machine) -> None:
    """Per core count: eff_engine of every policy; static, dynamic and cost with the paper's
    start-up next to the paper's own static and dynamic; the start-up and cost's budget."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    print(f"\nPredicted on a cluster: service {machine.service * 1e6:.0f} us/message, 10 tasks of 27-33 s "
          "per worker.\nengine only, per policy | with the paper's MPI start-up: static, dynamic, cost "
          "| the paper's mpi4py static, dynamic | start-up | start-up budget of cost for 0.99\n"
          "(the paper's dynamic counts the master's core as lost, about (cores - 1) / cores x ours)")
    print(f"{'cores':>7} " + " ".join(f"{p:>11}" for p in policies)
          + f" | {'static':>6} {'dynamic':>7} {'cost':>6} | {'paper':>9} | {'start-up':>8} {'budget':>7}")
    for n in dict.fromkeys(r["ranks"] for r in rows):
        mine = {r["policy"]: r for r in rows if r["ranks"] == n}
        paper = " ".join("   -" if mine[p]["paper_eff"] is None else f"{mine[p]['paper_eff']:.2f}"
                         for p in ("static", "dynamic"))
        print(f"{n:>7} " + " ".join(f"{mine[p]['eff_engine']:>11.4f}" for p in policies)
              + f" | {mine['static']['eff_with_startup']:>6.3f} {mine['dynamic']['eff_with_startup']:>7.3f} "
              f"{mine['cost']['eff_with_startup']:>6.3f} | {paper:>9} | {mine['cost']['startup_s']:>7.2f}s "
              f"{mine['cost']['startup_budget_s']:>6.2f}s")


def nominal(row: dict) -> float:
    """A row's nominal mean task length: time_scale x the mean of uniform(27, 33)."""
    return round(row["time_scale"] * (LOW + HIGH) / 2, 9)


def print_sweep(rows: list[dict], lengths: tuple[float, ...], service: float) -> None:
    """eff_engine per variant and mean task length, and the shortest length that keeps 0.99."""
    for ranks in dict.fromkeys(r["ranks"] for r in rows):
        mine = [r for r in rows if r["ranks"] == ranks]
        print(f"\nShortest task for eff_engine >= {TARGET} at {ranks:,} ranks (service "
              f"{service * 1e6:.0f} us/message); eff_engine by mean task length (s):")
        print(VARIANT_NOTES)
        print(f"{'variant':<40} " + " ".join(f"{x:>6g}" for x in lengths) + f" {'shortest':>10}")
        for plan in dict.fromkeys(r["policy"] for r in mine):
            swept = {nominal(r): r["eff_engine"] for r in mine
                     if r["policy"] == plan and r["scenario"] == "sweep"}
            best = [nominal(r) for r in mine if r["policy"] == plan and r["scenario"] == "shortest"]
            print(f"{plan:<40} " + " ".join(f"{swept.get(x, math.nan):>6.3f}" for x in lengths)
                  + (f" {'<=' * (best[0] <= lengths[0])}{best[0]:.3g} s".rjust(10) if best else "  none"))
        one = [r["policy"] for r in mine if r["scenario"] == "sweep" and nominal(r) == 1.0
               and r["eff_engine"] >= TARGET]
        print(f"1 s tasks at {ranks:,} ranks keep eff_engine >= {TARGET} with: {', '.join(one) or 'none'}")


def result_line(cluster: list[dict]) -> str:
    """RESULT at 12,288 cores: engine-only efficiencies, cost with the paper's start-up, budget."""
    at = {r["policy"]: r for r in cluster if r["ranks"] == 12288}
    cost = at["cost"]
    return (f"RESULT cores=12288 eff_static={at['static']['eff_engine']:.4f} "
            f"eff_dynamic={at['dynamic']['eff_engine']:.4f} eff_cost={cost['eff_engine']:.4f} "
            f"paper_dynamic={at['dynamic']['paper_eff']:.2f} "
            f"eff_cost_with_paper_startup={cost['eff_with_startup']:.4f} "
            f"startup_budget_s={cost['startup_budget_s']:.2f}")


def default_measured() -> str | None:
    """scaling/out/weak/weak.csv if the harness has written it."""
    path = os.path.join(DEFAULT_DIR, "weak.csv")
    return path if os.path.exists(path) else None


def sweep_all(ranks: list[int], lengths: tuple[float, ...], refine: int, machine: Machine,
              paper: list[dict], law: tuple[float, float]) -> list[dict]:
    """sweep_rows of every variant at every rank count."""
    return [row for n in ranks for plan in VARIANTS
            for row in sweep_rows(plan, n, machine, paper_startup(n, paper, law), lengths, refine)]


# --- parallel tasks: packing a mix of group sizes (mtcmpi/groups.py) ------------------------------

GROUP_SIZES = (1, 2, 4, 8)
GROUP_RANKS = (1024, 12288)
RANKS_PER_HOST = 48
ROUNDS = 20   # the mix holds about this many mean task lengths of work per worker rank


def group_workload(workers: int, seed: int, rounds: int = ROUNDS) -> tuple[np.ndarray, np.ndarray]:
    """A seeded mix: sizes drawn evenly from 1/2/4/8, durations uniform(0.5, 1.5) (mean 1), as many
    tasks as make `rounds` mean task lengths of work on every worker rank."""
    rng = np.random.default_rng(seed)
    n = int(rounds * workers / np.mean(GROUP_SIZES))
    sizes, seconds = rng.choice(GROUP_SIZES, n), rng.uniform(0.5, 1.5, n)
    if sizes.max() > workers:
        raise ValueError(f"a mix with {sizes.max()}-rank tasks needs at least {sizes.max()} workers")
    return sizes, seconds


def packing_bound(sizes: np.ndarray, seconds: np.ndarray, workers: int) -> float:
    """The best packing efficiency any schedule can reach: work / (workers x the makespan's lower
    bound: the work spread evenly, the longest task, and the tasks wider than half the workers
    one after another, since no two of them fit at once)."""
    work = float((sizes * seconds).sum())
    wide = float(seconds[2 * sizes > workers].sum())
    return work / (workers * max(work / workers, float(seconds.max()), wide))


def pack(sizes: np.ndarray, seconds: np.ndarray, ranks: int, per_host: int = RANKS_PER_HOST,
         packing: str = "backfill", service: float = SERVICE, item: float = ITEM,
         latency: float = 2e-4, by_cost: bool = False) -> float:
    """The makespan of the master packing these tasks onto ranks - 1 workers with mtcmpi's own
    Scheduler: the master starts a task in `service` + `item` per member, a start and an end
    each take `latency` to arrive, and it handles one message at a time. by_cost: the durations
    are known in advance (--cost), and each size goes longest first, as the engine does."""
    if "mpi4py.MPI" not in sys.modules:   # the model runs mtcmpi's Scheduler, never MPI itself
        import mpi4py
        mpi4py.rc.initialize = False
    from mtcmpi.groups import Placement, Scheduler

    scheduler = Scheduler(Placement({r: str((r - 1) // per_host) for r in range(1, ranks)}), packing)
    ids = np.arange(len(sizes))
    for tid in (longest_first(ids, seconds) if by_cost else ids).tolist():
        scheduler.add((tid, None), int(sizes[tid]))
    running: list[tuple[float, int, list[int]]] = []
    now = master = last = 0.0
    while len(scheduler) or running:
        for (tid, _), members in scheduler.ready(now):
            master = max(master, now) + service + item * len(members)
            end = master + latency + float(seconds[tid])
            heapq.heappush(running, (end, tid, members))
            last = max(last, end)
        end, tid, members = heapq.heappop(running)
        master = now = max(master, end + latency) + service
        scheduler.placement.give(members)
        scheduler.done(float(seconds[tid]))
    return last


def packing_efficiency(sizes: np.ndarray, seconds: np.ndarray, ranks: int, **kw) -> float:
    """Rank-seconds of the tasks / (worker ranks x the modelled makespan)."""
    return float((sizes * seconds).sum()) / ((ranks - 1) * pack(sizes, seconds, ranks, **kw))


def groups_main(ranks: list[int], seed: int = 1) -> None:
    """--groups: the packing efficiency of each rule at each rank count, beside the bound."""
    print(f"Parallel tasks: sizes {'/'.join(map(str, GROUP_SIZES))} evenly, durations uniform(0.5, 1.5) s, "
          f"{ROUNDS} mean task lengths of work per worker, {RANKS_PER_HOST} ranks per host, seed {seed}")
    rules = {"backfill": {}, "+costs": {"by_cost": True}, "greedy": {"packing": "greedy"},
             "strict": {"packing": "strict"}}
    print(f"{'ranks':>7} {'tasks':>7} {'bound':>7} " + " ".join(f"{p:>9}" for p in rules))
    found = {}
    for n in ranks:
        sizes, seconds = group_workload(n - 1, seed)
        effs = {p: packing_efficiency(sizes, seconds, n, **kw) for p, kw in rules.items()}
        found[n] = (packing_bound(sizes, seconds, n - 1), effs["backfill"], effs["+costs"])
        print(f"{n:>7} {len(sizes):>7} {found[n][0]:>7.4f} " + " ".join(f"{e:>9.4f}" for e in effs.values()))
    print("+costs: backfill with --cost, each size longest first (the tail is the shortest tasks)")
    print("RESULT " + " ".join(f"packing_eff_{n}={eff:.4f} packing_eff_cost_{n}={cost:.4f} bound_{n}={bound:.4f}"
                               for n, (bound, eff, cost) in found.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", action="store_true", help="only the model of parallel tasks: "
                        "packing a mix of group sizes at 1,024 and 12,288 ranks (seconds)")
    parser.add_argument("--measured", default=default_measured(),
                        help="weak.csv of scaling/weak.py (default: scaling/out/weak/weak.csv if present)")
    parser.add_argument("--outdir", help="where simulate.csv goes (default: next to --measured, "
                                         "else scaling/out/weak)")
    parser.add_argument("--quick", action="store_true",
                        help="no 100,000-core row, a coarse sweep at 1,536 ranks (seconds)")
    parser.add_argument("--service", type=float, default=SERVICE,
                        help=f"master seconds per message on a cluster (default {SERVICE:g})")
    parser.add_argument("--sweep-ranks", help="rank counts of the task-length sweep, comma-separated "
                                              "(default 12288; --quick: 1536)")
    parser.add_argument("--paper", default=PAPER, help="the paper's table (reference CSV)")
    args = parser.parse_args(argv)
    if args.groups:
        groups_main(list(GROUP_RANKS))
        return
    rows = read_measured(args.measured) if args.measured else []
    here, lines = fit_machine(rows) if rows else (Machine(), ["  no measured rows: defaults"])
    print_fit(rows, lines)
    compared = here_rows(rows, here)
    print_here(compared)
    paper = paper_table(args.paper)
    law = startup_law(paper)
    print(f"\nPaper's MPI start-up ~ {law[0]:.2g} x cores^{law[1]:.2f} s (fit, used past 12,288 cores)")
    cluster_machine = replace(here, service=args.service, futures_service=FUTURES_SERVICE)
    cores = [int(r["cores"]) for r in paper] + ([] if args.quick else [CLUSTER_CORES])
    cluster = cluster_rows(paper, cluster_machine, law, cores)
    print_cluster(cluster, cluster_machine)
    lengths = QUICK_TASK_S if args.quick else SWEEP_TASK_S
    sweep_ranks = [int(x) for x in (args.sweep_ranks or ("1536" if args.quick else "12288")).split(",")]
    sweep = sweep_all(sweep_ranks, lengths, 2 if args.quick else REFINE_STEPS, cluster_machine, paper, law)
    print_sweep(sweep, lengths, cluster_machine.service)
    outdir = args.outdir or (os.path.dirname(os.path.abspath(args.measured)) if args.measured else DEFAULT_DIR)
    write_csv(os.path.join(outdir, "simulate.csv"), compared + cluster + sweep)
    print(f"\nwrote {os.path.join(outdir, 'simulate.csv')}")
    print(result_line(cluster))


if __name__ == "__main__":
    main()
