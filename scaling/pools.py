"""mtcmpi.connect() measured: no-op task rate to one local 2-rank pool against ipyparallel, and
the sleep benchmark against the in-job Executor on the same number of workers.

    python scaling/pools.py [--part all|noop|sleep] [--calls N] [--submits N] [--chunksize C]
                            [--ipp-calls N] [--sleep-workers 8,16] [--per-worker 10] [--time-scale 0.01]

The client is this process (no MPI here); the pool is `mpiexec -n 2 python -m mtcmpi serve`
(rank 0 bridges, rank 1 works), started and killed by this script. Figures are calls per
second from the first submission until every result is back, pool start-up excluded. The peer
is ipyparallel's load-balanced view with one engine (the same one worker), map of the same
no-op calls; it is reported unavailable, with its error, if it cannot start. Ends with
RESULT connect_map_tps=... connect_submit_tps=... ipp_tps=... ratio=..., the ratio like for like:
one task per call on both sides (connect() submit over ipyparallel's map).

The sleep benchmark (Lunacek et al.'s, kernels.sleep.task: uniform(27, 33) x --time-scale
seconds, --per-worker tasks per worker) runs W workers two ways: the in-job Executor
(`mpiexec -n W+1`, rank 0 drives mtcmpi.executor()'s map) and connect() from this process to a
pool `mpiexec -n W+1 python -m mtcmpi serve` (rank 0 bridges). Each side first runs one quick
task per worker (start-up excluded), then map(task, ...) with one task per call; efficiency =
the tasks' own sleep time / (W x the map's wall time). The RESULT line adds, for the largest W,
sleep_workers=W eff_executor=... eff_connect=... eff_gap=... (target: gap <= 0.02 at 64 workers).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import ROOT, last_json, mpirun, signal_job, start  # noqa: E402

sys.path.insert(0, ROOT)
from kernels.noop import none  # noqa: E402
from kernels.sleep import task  # noqa: E402
from mtcmpi.errors import exception_line  # noqa: E402


def rate(n: int, run) -> float:
    start = time.perf_counter()
    run()
    return n / (time.perf_counter() - start)


@contextmanager
def connected(ranks: int) -> Iterator:
    """An Executor from connect() to a fresh session on this host, a pool of `ranks` ranks
    (`mtcmpi serve`) joining it; both ended on the way out (the pool killed if it lingers)."""
    import mtcmpi

    with tempfile.TemporaryDirectory(prefix="mtcmpi-pools-") as folder:
        path = os.path.join(folder, "pool.json")
        ex = mtcmpi.connect(path, ip="127.0.0.1")
        pool = start(ranks, ["-m", "mtcmpi", "serve", "--connection", path], stdout=subprocess.DEVNULL)
        try:
            yield ex
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
            try:
                pool.wait(60)
            except subprocess.TimeoutExpired:
                signal_job(pool.pid, signal.SIGKILL)
                pool.wait(30)


def measure_connect(calls: int, submits: int, chunksize: int) -> tuple[float, float]:
    """(map calls/s, submit calls/s) through connect() to a fresh 2-rank pool."""
    with connected(2) as ex:
        ex.submit(none).result(timeout=120)   # the pool has joined
        list(ex.map(none, range(2000), chunksize=chunksize))   # warm-up
        map_tps = rate(calls, lambda: list(ex.map(none, range(calls), chunksize=chunksize)))
        submit_tps = rate(submits, lambda: cf.wait([ex.submit(none, i) for i in range(submits)]))
        return map_tps, submit_tps


def measure_ipp(calls: int) -> float | str:
    """ipyparallel load-balanced map of calls no-ops on one engine (calls/s), or why not."""
    try:
        import ipyparallel as ipp

        cluster = ipp.Cluster(n=1, log_level=40)
        client = cluster.start_and_connect_sync(activate=False)
    except Exception as exc:
        return exception_line(exc)
    try:
        client.wait_for_engines(1, timeout=120)
        view = client.load_balanced_view()
        view.map_sync(none, range(100))   # warm-up
        return rate(calls, lambda: view.map_sync(none, range(calls)))
    except Exception as exc:
        return exception_line(exc)
    finally:
        cluster.stop_cluster_sync()


def sleep_items(workers: int, per_worker: int, scale: float) -> list[tuple[int, float]]:
    return [(i, scale) for i in range(workers * per_worker)]


def efficiency(results: list[dict], workers: int, wall: float) -> float:
    """The tasks' own time over the workers' time: sum(end - start) / (workers x wall)."""
    return sum(r["end_time"] - r["start_time"] for r in results) / (workers * wall)


def sleep_map(ex, workers: int, per_worker: int, scale: float) -> dict:
    """One quick task per worker, then the timed map of the sleep tasks: efficiency and wall."""
    list(ex.map(task, range(workers), [0.0] * workers))
    indices, scales = zip(*sleep_items(workers, per_worker, scale))
    start = time.perf_counter()
    results = list(ex.map(task, indices, scales))
    wall = time.perf_counter() - start
    return {"efficiency": efficiency(results, workers, wall), "wall": wall, "tasks": len(results)}


def child_executor(workers: int, per_worker: int, scale: float) -> None:
    """Under mpiexec -n workers+1: the sleep map on the in-job Executor; rank 0 prints JSON."""
    import mtcmpi

    with mtcmpi.executor() as ex:
        if ex is not None:
            print(json.dumps(sleep_map(ex, workers, per_worker, scale)), flush=True)


def measure_sleep(workers: int, per_worker: int, scale: float) -> tuple[dict, dict]:
    """(in-job Executor, connect()) figures of the sleep map on `workers` workers."""
    inside = last_json(mpirun(workers + 1, [os.path.abspath(__file__), "--executor-child", str(workers),
                                             str(per_worker), repr(scale)], timeout=600).stdout)
    with connected(workers + 1) as ex:
        return inside, sleep_map(ex, workers, per_worker, scale)


def noop_part(args: argparse.Namespace) -> str:
    """The no-op rates and ipyparallel; the RESULT fields."""
    map_tps, submit_tps = measure_connect(args.calls, args.submits, args.chunksize)
    print(f"connect() map, chunksize {args.chunksize}: {args.calls} no-op calls, {map_tps:,.0f} calls/s "
          "(target >= 50,000)")
    print(f"connect() submit, one task per call: {args.submits} calls, {submit_tps:,.0f} calls/s "
          "(target >= 5,000)")
    ipp = measure_ipp(args.ipp_calls)
    if isinstance(ipp, str):
        print(f"ipyparallel: unavailable ({ipp})")
        ipp_tps, ratio = "nan", "nan"
    else:
        ipp_tps, ratio = f"{ipp:.0f}", f"{submit_tps / ipp:.1f}"
        print(f"ipyparallel load-balanced map, 1 engine: {args.ipp_calls} calls, {ipp:,.0f} calls/s; "
              f"one task per call on both sides, connect() is {submit_tps / ipp:.1f}x (target >= 20x); "
              f"connect() map with chunks {map_tps / ipp:.0f}x")
    return f"connect_map_tps={map_tps:.0f} connect_submit_tps={submit_tps:.0f} ipp_tps={ipp_tps} ratio={ratio}"


def sleep_part(args: argparse.Namespace) -> str:
    """The sleep benchmark at each worker count; the RESULT fields of the largest."""
    print(f"sleep benchmark: {args.per_worker} tasks per worker of uniform(27, 33) x {args.time_scale:g} s, "
          f"map with one task per call; efficiency = task time / (workers x wall)")
    for workers in args.sleep_workers:
        inside, remote = measure_sleep(workers, args.per_worker, args.time_scale)
        gap = inside["efficiency"] - remote["efficiency"]
        print(f"  {workers:3d} workers: in-job Executor {inside['efficiency']:.3f} ({inside['wall']:.2f} s), "
              f"connect() {remote['efficiency']:.3f} ({remote['wall']:.2f} s), gap {gap:+.3f} "
              "(target <= 0.02 at 64 workers)")
    return (f"sleep_workers={workers} eff_executor={inside['efficiency']:.3f} "
            f"eff_connect={remote['efficiency']:.3f} eff_gap={gap:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "noop", "sleep"), default="all",
                        help="the no-op rates (with ipyparallel), the sleep benchmark, or both")
    parser.add_argument("--calls", type=int, default=200_000, help="calls in the map (default 200,000)")
    parser.add_argument("--submits", type=int, default=20_000, help="submit() calls (default 20,000)")
    parser.add_argument("--chunksize", type=int, default=1000, help="map chunksize (default 1000)")
    parser.add_argument("--ipp-calls", type=int, default=2000, help="calls through ipyparallel")
    parser.add_argument("--sleep-workers", type=lambda v: [int(w) for w in v.split(",")], default=[8],
                        help="worker counts for the sleep benchmark, comma-separated (default 8)")
    parser.add_argument("--per-worker", type=int, default=10, help="sleep tasks per worker (default 10)")
    parser.add_argument("--time-scale", type=float, default=0.01, help="sleep time scale (default "
                        "0.01: tasks of 0.27-0.33 s; 1.0 is the paper's)")
    parser.add_argument("--executor-child", nargs=3, metavar=("W", "PER", "SCALE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.executor_child:
        workers, per_worker, scale = args.executor_child
        return child_executor(int(workers), int(per_worker), float(scale))
    fields = []
    if args.part in ("all", "noop"):
        fields.append(noop_part(args))
    if args.part in ("all", "sleep"):
        fields.append(sleep_part(args))
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
