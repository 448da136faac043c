"""Parallel tasks: how well rank 0 packs a mix of group sizes, and what a k-rank task costs.

    python scaling/parallel_tasks.py [--ranks 17] [--seed 1] [--mean 0.3] [--quick]

Packing: the seeded mix of scaling/simulate.py (group sizes 1/2/4/8 evenly, durations uniform
(0.5, 1.5) x --mean seconds, ROUNDS mean task lengths of work per worker rank), run for real under
`mpiexec -n RANKS` as Python functions on their own communicators that sleep their duration
(every member sleeps: the group is busy). packing_eff = sum(size x duration) / (worker ranks x
makespan), the makespan from the first task start to the last end; bound = the best any schedule
could reach for the same mix (simulate.packing_bound); the model's figure for this run is beside
them. Run once as backfill and once with the durations as --cost (each size longest first).
Worker ranks = RANKS - 1: rank 0 only packs.

Dispatch: 300 no-op tasks on k + 1 ranks (one group at a time), engine seconds per task, for a
1-rank function without `comm` (the plain path of the parallel engine), and functions with
`comm` at k = 1, 2, 4, 8: the cost of forming (Create_group), running and freeing a group.

On this 2-core machine shared with other work, keep --ranks at 17 or less (16 workers); the
issue's 64 ranks want a quiet machine. Last line: RESULT packing_eff=<x> bound=<x> dispatch_k4_us=<x>.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import last_json, mpirun  # noqa: E402
from simulate import ROUNDS, group_workload, packing_bound, packing_efficiency  # noqa: E402

DISPATCH_TASKS = 300
DISPATCH_K = (1, 2, 4, 8)


def sleep_task(d: float, k: int, comm) -> None:
    """A group busy for d seconds."""
    time.sleep(d)


def noop(x: int, comm) -> None:
    return None


def noop_plain(x: int) -> None:
    return None


def child(kind: str, k: int, seed: int, mean: float) -> None:
    """Under mpiexec: one run; rank 0 prints what it measured as JSON."""
    from mpi4py import MPI

    from mtcmpi.job import run_job
    from mtcmpi.options import RunOptions
    from mtcmpi.tasks import ItemsSource
    from mtcmpi.world import World

    comm = MPI.COMM_WORLD
    world = World.of()
    if kind == "dispatch":
        fn = noop_plain if k == 0 else noop
        out = run_job(world, fn, ItemsSource(range(DISPATCH_TASKS)),
                      RunOptions(ranks_per_task=max(k, 1), quiet=True))
        if out.summary:
            print(json.dumps({"per_task_us": out.summary.engine / DISPATCH_TASKS * 1e6}))
        return
    sizes, seconds = group_workload(comm.size - 1, seed)
    items = [{"d": float(d) * mean, "k": int(s)} for s, d in zip(sizes, seconds)]
    out = run_job(world, sleep_task, ItemsSource(items, star=True),
                  RunOptions(ranks="k", cost="d" if kind == "cost" else None, quiet=True))
    spans = comm.gather((min(out.log.starts, default=float("inf")), max(out.log.ends, default=0.0)))
    if out.summary:
        makespan = max(e for _, e in spans) - min(s for s, _ in spans)
        work = float((sizes * seconds).sum()) * mean
        print(json.dumps({"eff": work / ((comm.size - 1) * makespan), "makespan": makespan,
                          "tasks": len(items), "exit": out.exit_code}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=17, help="default 17: 16 workers, so two "
                        "8-rank tasks fit at once (with 15 no two do, and they run one by one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mean", type=float, default=0.3, help="mean task duration (s), default 0.3")
    parser.add_argument("--quick", action="store_true", help="9 ranks, dispatch at k = 1, 2, 4")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, k, seed, mean = args.child
        return child(kind, int(k), int(seed), float(mean))
    ranks = 9 if args.quick else args.ranks
    sizes, seconds = group_workload(ranks - 1, args.seed)
    bound = packing_bound(sizes, seconds, ranks - 1)
    model = {kind: packing_efficiency(sizes, seconds * args.mean, ranks, per_host=ranks,
                                      by_cost=kind == "cost") for kind in ("backfill", "cost")}
    print(f"Packing on {ranks} ranks ({ranks - 1} workers): {len(sizes)} tasks of sizes 1/2/4/8, "
          f"durations uniform(0.5, 1.5) x {args.mean} s, {ROUNDS} mean lengths of work per worker, "
          f"seed {args.seed}")
    eff = {}
    for kind in ("backfill", "cost"):
        r = last_json(mpirun(ranks, [os.path.abspath(__file__), "--child", kind, "0", str(args.seed),
                                     str(args.mean)], timeout=600).stdout)
        eff[kind] = r["eff"]
        print(f"  {kind:9s} packing_eff {r['eff']:.4f}  makespan {r['makespan']:.2f} s  "
              f"(bound {bound:.4f}, model {model[kind]:.4f})", flush=True)
    print(f"Dispatch: {DISPATCH_TASKS} no-op tasks on k + 1 ranks, engine time per task")
    cost = {}
    for k in (0,) + (DISPATCH_K[:3] if args.quick else DISPATCH_K):
        r = last_json(mpirun(max(k, 1) + 1, [os.path.abspath(__file__), "--child", "dispatch", str(k),
                                             "0", "0"], timeout=600).stdout)
        cost[k] = r["per_task_us"]
        label = "1 rank, no comm" if k == 0 else f"k = {k}, comm"
        print(f"  {label:16s} {cost[k]:8.0f} us/task  ({cost[k] / cost[0] if k else 1:.1f} x the 1-rank task)",
              flush=True)
    print(f"RESULT packing_eff={eff['backfill']:.4f} bound={bound:.4f} packing_eff_cost={eff['cost']:.4f} "
          f"dispatch_k4_us={cost.get(4, float('nan')):.0f} dispatch_k1_us={cost[0]:.0f}")


if __name__ == "__main__":
    main()
