"""Peak memory of the master while it streams a large task list (target: < 200 MB at 10M tasks).

    python scaling/master_memory.py [--quick] [--tasks N]

Writes a one-column params CSV of N rows (default 10,000,000; --quick 1,000,000), runs it with
1 master + 1 worker on kernels.noop:none, and prints each rank's peak RSS. Last line:
RESULT tasks=<n> master_rss_mb=<...> worker_rss_mb=<...> engine_s=<...>
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import last_json, mpirun  # noqa: E402


def child(path: str) -> None:
    """Under mpiexec: run the params file; rank 0 prints peak RSS of every rank."""
    from mpi4py import MPI

    from kernels.noop import none
    from mtcmpi.job import run_job
    from mtcmpi.options import RunOptions
    from mtcmpi.tasks import ParamsSource
    from mtcmpi.world import World

    outcome = run_job(World.of(), none, ParamsSource(path), RunOptions(quiet=True))
    rss = MPI.COMM_WORLD.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if outcome.summary:
        print(json.dumps({"rss_mb": rss, "engine": outcome.summary.engine}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000,000 tasks")
    parser.add_argument("--tasks", type=int, help="number of tasks (default 10,000,000)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    n = args.tasks or (1_000_000 if args.quick else 10_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "params.csv")
        with open(path, "w") as f:
            f.write("x\n")
            f.writelines(f"{i}\n" for i in range(n))
        got = last_json(mpirun(2, [os.path.abspath(__file__), "--child", path], timeout=1800).stdout)
    master, worker = got["rss_mb"]
    print(f"{n:,} tasks from a params file: master peak RSS {master:.0f} MB, worker {worker:.0f} MB "
          f"(its task log: 25 bytes a task), engine {got['engine']:.1f} s")
    print(f"RESULT tasks={n} master_rss_mb={master:.0f} worker_rss_mb={worker:.0f} engine_s={got['engine']:.1f}")


if __name__ == "__main__":
    main()
