"""No-op task dispatch rate of mtcmpi against mpi4py.futures, measured in the same run.

    python scaling/throughput.py [--quick] [--ranks N]

Configurations: 1 master + 1 worker and 1 master + all other ranks, unchunked (chunk 1) and
automatic chunking, mtcmpi.Executor.map (chunksize 1) and Executor.submit in a loop (one Future
per task, then waiting for all); the peer is MPIPoolExecutor.map with chunksize 1 and its best
chunksize.
Each figure is engine time only (tasks handed out until all are back), with MPI start-up
excluded for both tools. The last line is the RESULT line.

--peers ipyparallel,celery,dask adds the paper's other peers (scaling/peers.py), one worker
each, on the same no-op task: ipp_direct (a direct view's map: one message per engine),
ipp_lb (load-balanced, one task at a time), celery (Redis broker) and dask (client.map); the
RESULT line then adds best_peer_tps and peer_ratio (mtcmpi unchunked over the fastest peer
that hands out one task at a time) and bulk_ratio (mtcmpi automatic chunking over ipp_direct,
which sends a whole map in one message per engine).
--csv FILE keeps the table (ranks, tool, chunk, tps, error) for the study notebook.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import last_json, mpirun  # noqa: E402


def child_mtcmpi(n: int, chunk: int | None) -> None:
    """Under mpiexec: run n no-op tasks through the engine; rank 0 prints tasks/s."""
    from kernels.noop import none
    from mtcmpi.job import run_job
    from mtcmpi.options import RunOptions
    from mtcmpi.tasks import CountSource
    from mtcmpi.world import World

    outcome = run_job(World.of(), none, CountSource(n), RunOptions(chunk=chunk, quiet=True))
    if outcome.summary:
        print(json.dumps({"tps": n / outcome.summary.engine}))


def timed_map(pool, n: int, chunksize: int) -> float:
    """Tasks/s of pool.map over n no-ops, after one task has warmed the workers up."""
    from kernels.noop import none

    pool.submit(none).result()
    t0 = time.perf_counter()
    for _ in pool.map(none, range(n), chunksize=chunksize):
        pass
    return n / (time.perf_counter() - t0)


def child_futures(n: int, chunksize: int) -> None:
    """Under `mpiexec python -m mpi4py.futures`: MPIPoolExecutor.map over n no-op tasks."""
    from mpi4py.futures import MPIPoolExecutor

    with MPIPoolExecutor() as pool:
        print(json.dumps({"tps": timed_map(pool, n, chunksize)}))


def child_executor(n: int) -> None:
    """Under mpiexec: mtcmpi.Executor.map over n no-op tasks, chunksize 1."""
    from mtcmpi.futures import executor

    with executor() as ex:
        if ex is not None:
            print(json.dumps({"tps": timed_map(ex, n, 1)}))


def child_submit(n: int) -> None:
    """Under mpiexec: n calls of mtcmpi.Executor.submit in a loop, then wait for all."""
    from concurrent.futures import wait

    from kernels.noop import none
    from mtcmpi.futures import executor

    with executor() as ex:
        if ex is not None:
            ex.submit(none).result()
            t0 = time.perf_counter()
            wait([ex.submit(none, i) for i in range(n)])
            print(json.dumps({"tps": n / (time.perf_counter() - t0)}))


def measure(ranks: int, tool: str, n: int, chunk: int | None) -> float:
    """Tasks per second of one configuration, from a fresh mpiexec."""
    here = os.path.abspath(__file__)
    if tool == "mtcmpi":
        args = [here, "--child", "mtcmpi", "-n", str(n)] + (["--chunk", str(chunk)] if chunk else [])
    elif tool in ("executor", "submit"):
        args = [here, "--child", tool, "-n", str(n)]
    else:
        args = ["-m", "mpi4py.futures", here, "--child", "futures", "-n", str(n), "--chunk", str(chunk)]
    return last_json(mpirun(ranks, args).stdout)["tps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tasks (finishes in < 40 s)")
    parser.add_argument("--ranks", type=int, default=4,
                        help="ranks for the '1 master + all other ranks' runs (default 4: oversubscribed on 2 cores)")
    parser.add_argument("--child", choices=["mtcmpi", "futures", "executor", "submit"], help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--peers", default="", help="also ipyparallel,celery,dask (the 'peers' extra)")
    parser.add_argument("--csv", help="write the table to this CSV file")
    args = parser.parse_args()
    if args.child == "mtcmpi":
        return child_mtcmpi(args.n, args.chunk)
    if args.child == "futures":
        return child_futures(args.n, args.chunk)
    if args.child == "executor":
        return child_executor(args.n)
    if args.child == "submit":
        return child_submit(args.n)

    scale = 1 if args.quick else 4
    rows = []
    for ranks in sorted({2, args.ranks}):
        rows.append((ranks, "mtcmpi", 1, measure(ranks, "mtcmpi", 100_000 * scale, 1)))
        rows.append((ranks, "mtcmpi", "auto", measure(ranks, "mtcmpi", 1_000_000 * scale, None)))
        rows.append((ranks, "mtcmpi.Executor", 1, measure(ranks, "executor", 50_000 * scale, 1)))
    rows.append((2, "Executor.submit", 1, measure(2, "submit", 20_000 * scale, 1)))
    for chunk in (1, 10, 100, 1000):
        rows.append((2, "mpi4py.futures", chunk, measure(2, "futures", min(2000 * chunk, 100_000) * scale, chunk)))
    errors = peer_rows(args.peers, 0.5 * scale, rows)
    print(f"{'ranks':>5} {'tool':<16} {'chunk':>6} {'tasks/s':>12}")
    for ranks, tool, chunk, tps in rows:
        print(f"{ranks:>5} {tool:<16} {chunk!s:>6} {tps:>12,.0f}")
    for tool, error in errors.items():
        print(f"{2:>5} {tool:<16} failed to start: {error}")
    if args.csv:
        save_csv(args.csv, rows, errors)
    pick = {(r, t, c): v for r, t, c, v in rows}
    mtcmpi_tps, chunked = pick[(2, "mtcmpi", 1)], pick[(2, "mtcmpi", "auto")]
    futures_tps, executor_tps = pick[(2, "mpi4py.futures", 1)], pick[(2, "mtcmpi.Executor", 1)]
    submit_tps = pick[(2, "Executor.submit", 1)]
    best = max(v for (r, t, c), v in pick.items() if t == "mpi4py.futures")
    print(f"mpi4py.futures best chunksize: {best:,.0f} tasks/s; mtcmpi auto-chunk is {chunked / best:.1f}x that")
    print(f"RESULT mtcmpi_tps={mtcmpi_tps:.0f} futures_tps={futures_tps:.0f} "
          f"ratio={mtcmpi_tps / futures_tps:.1f} chunked_tps={chunked:.0f} executor_tps={executor_tps:.0f} "
          f"submit_tps={submit_tps:.0f}" + peer_fields(rows, mtcmpi_tps, chunked))


ONE_AT_A_TIME = ("ipp_lb", "celery", "dask")   # peers' dynamic dispatch; ipp_direct is bulk


def peer_rows(peers: str, seconds: float, rows: list) -> dict[str, str]:
    """Append (2, tool, '-', tasks/s) for each peer's no-op run with one worker (tasks enough
    for a map of `seconds`); {tool: error} for those that failed to start."""
    if not peers:
        return {}
    from peers import run_peer

    errors = {}
    for peer in peers.split(","):
        for got in run_peer(peer, 1, ["noop", str(seconds)]):
            if "error" in got:
                errors[got["tool"]] = got["error"]
            else:
                rows.append((2, got["tool"], "-", got["tps"]))
    return errors


def peer_fields(rows: list, unchunked: float, chunked: float) -> str:
    """' best_peer_tps=... peer_ratio=... bulk_ratio=...' for the peers that ran, else ''."""
    best = max((v for _, t, _, v in rows if t in ONE_AT_A_TIME), default=None)
    bulk = next((v for _, t, _, v in rows if t == "ipp_direct"), None)
    return ((f" best_peer_tps={best:.0f} peer_ratio={unchunked / best:.1f}" if best else "")
            + (f" bulk_ratio={chunked / bulk:.2f}" if bulk else ""))


def save_csv(path: str, rows: list, errors: dict[str, str]) -> None:
    """The table as CSV: ranks, tool, chunk, tps, error."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ranks", "tool", "chunk", "tps", "error"])
        writer.writerows([*r, ""] for r in rows)
        writer.writerows([2, tool, "-", "", error] for tool, error in errors.items())


if __name__ == "__main__":
    main()
