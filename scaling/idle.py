"""Idle and waiting ranks do not spin: many oversubscribed ranks, 0.1 s sleep tasks.

    python scaling/idle.py [--quick] [--ranks 128]

Each working rank gets 10 tasks that sleep 0.1 s, so the ideal engine time is 1.0 s. With
far more ranks than cores (128 on 2 here), a rank that spins while it waits steals the CPU
from the ranks that have work, and the engine time grows. Reported per policy: engine time
over ideal (target <= 1.10), start-up apart, and the CPU seconds that rank 0 and the busiest
other rank used over the whole run. Last line: RESULT ranks=<n> dynamic_ratio=<...> static_ratio=<...>
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import last_json, mpirun  # noqa: E402

SLEEP = 0.1


def child(schedule: str) -> None:
    """Under mpiexec: 10 sleep tasks per working rank; rank 0 prints times and CPU use."""
    from mpi4py import MPI

    from kernels.sleep import work
    from mtcmpi.job import run_job
    from mtcmpi.options import RunOptions
    from mtcmpi.tasks import ItemsSource
    from mtcmpi.world import World

    comm = MPI.COMM_WORLD
    options = RunOptions(schedule=schedule, quiet=True)
    workers = options.policy().kind.working_ranks(comm.size)
    outcome = run_job(World.of(), work, ItemsSource([SLEEP] * (10 * workers)), options)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = comm.gather(usage.ru_utime + usage.ru_stime)
    if outcome.summary:
        print(json.dumps({"engine": outcome.summary.engine, "startup": outcome.summary.startup,
                          "cpu0": cpu[0], "cpu_other": max(cpu[1:])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32 ranks")
    parser.add_argument("--ranks", type=int, default=128)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    ranks = 32 if args.quick else args.ranks
    ratio = {}
    for schedule in ("dynamic", "static"):
        r = last_json(mpirun(ranks, [os.path.abspath(__file__), "--child", schedule], timeout=600).stdout)
        ratio[schedule] = r["engine"] / (10 * SLEEP)
        print(f"{schedule:8s} {ranks} ranks: engine {r['engine']:.3f} s = {ratio[schedule]:.3f} x ideal "
              f"(start-up {r['startup']:.1f} s apart); CPU used: rank 0 {r['cpu0']:.2f} s, "
              f"busiest other rank {r['cpu_other']:.2f} s", flush=True)
    print(f"RESULT ranks={ranks} dynamic_ratio={ratio['dynamic']:.3f} static_ratio={ratio['static']:.3f}")


if __name__ == "__main__":
    main()
