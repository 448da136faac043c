"""No-op task rate through mtcmpi.connect() to one local 2-rank pool, against ipyparallel.

    python scaling/pools.py [--calls N] [--submits N] [--chunksize C] [--ipp-calls N]

The client is this process (no MPI here); the pool is `mpiexec -n 2 python -m mtcmpi serve`
(rank 0 bridges, rank 1 works), started and killed by this script. Figures are calls per
second from the first submission until every result is back, pool start-up excluded. The peer
is ipyparallel's load-balanced view with one engine (the same one worker), map of the same
no-op calls; it is reported unavailable, with its error, if it cannot start. Ends with
RESULT connect_map_tps=... connect_submit_tps=... ipp_tps=... ratio=..., the ratio like for like:
one task per call on both sides (connect() submit over ipyparallel's map).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import ROOT, environment  # noqa: E402

sys.path.insert(0, ROOT)
from kernels.noop import none  # noqa: E402


def rate(n: int, run) -> float:
    start = time.perf_counter()
    run()
    return n / (time.perf_counter() - start)


def measure_connect(calls: int, submits: int, chunksize: int) -> tuple[float, float]:
    """(map calls/s, submit calls/s) through connect() to a fresh 2-rank pool."""
    import mtcmpi

    folder = tempfile.TemporaryDirectory(prefix="mtcmpi-pools-")
    path = os.path.join(folder.name, "pool.json")
    ex = mtcmpi.connect(path, ip="127.0.0.1")
    pool = subprocess.Popen(["mpiexec", "-n", "2", sys.executable, "-m", "mtcmpi", "serve",
                             "--connection", path], cwd=ROOT, env=environment(),
                            stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        ex.submit(none).result(timeout=120)   # the pool has joined
        list(ex.map(none, range(2000), chunksize=chunksize))   # warm-up
        map_tps = rate(calls, lambda: list(ex.map(none, range(calls), chunksize=chunksize)))
        submit_tps = rate(submits, lambda: cf.wait([ex.submit(none, i) for i in range(submits)]))
        return map_tps, submit_tps
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
        try:
            pool.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(pool.pid, signal.SIGKILL)
        folder.cleanup()


def measure_ipp(calls: int) -> float | str:
    """ipyparallel load-balanced map of calls no-ops on one engine (calls/s), or why not."""
    try:
        import ipyparallel as ipp

        cluster = ipp.Cluster(n=1, log_level=40)
        client = cluster.start_and_connect_sync(activate=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        client.wait_for_engines(1, timeout=120)
        view = client.load_balanced_view()
        view.map_sync(none, range(100))   # warm-up
        return rate(calls, lambda: view.map_sync(none, range(calls)))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        cluster.stop_cluster_sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls in the map (default 200,000)")
    parser.add_argument("--submits", type=int, default=20_000, help="submit() calls (default 20,000)")
    parser.add_argument("--chunksize", type=int, default=1000, help="map chunksize (default 1000)")
    parser.add_argument("--ipp-calls", type=int, default=2000, help="calls through ipyparallel")
    args = parser.parse_args()
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
    print(f"RESULT connect_map_tps={map_tps:.0f} connect_submit_tps={submit_tps:.0f} "
          f"ipp_tps={ipp_tps} ratio={ratio}")


if __name__ == "__main__":
    main()
