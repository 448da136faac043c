"""What --out costs on results of any volume: peak memory of every rank and end-to-end rate.

    python scaling/output.py [--ranks 4] [--quick] [--compression gzip:1]
    python scaling/output.py --littlewood 48     what --compression costs and saves there
    python scaling/output.py --linear [--quick]  store time of 10^4..10^6 tasks per schedule

Two workloads, dynamic, each with and without --out: (a) "big", 3,000 tasks that each return a
1 MiB float64 array; (b) "small", 100,000 tasks that each return 8 KiB. For each run: the peak
RSS of every rank (getrusage) and the end-to-end result rate: bytes of results over engine time
(which includes writing the rows into the file during the run) plus store time (finishing the
file after the last task). In the same run, a single process writes the same bytes with
plain h5py to the same disk (made block by block, 32 MiB at a time): the baseline. Every
run starts after a sync, so none is slowed by the last one's dirty pages.
Last line: RESULT big_rss_mb=<max> small_rss_mb=<max> big_ratio=<x> small_ratio=<x>
(ratio: end-to-end rate with --out over the single writer's rate).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import last_json, mpirun  # noqa: E402

SIZES = {"big": (3000, 1 << 17), "small": (100_000, 1 << 10)}   # tasks, float64 per result


def big(i: int):
    """A 1 MiB result."""
    import numpy as np
    return np.full(SIZES["big"][1], float(i))


def small(i: int):
    """An 8 KiB result."""
    import numpy as np
    return np.full(SIZES["small"][1], float(i))


def scalar(i: int) -> int:
    """A no-op task with a one-number result."""
    return i


def child(target: str, n: int, out: str | None, compression: str | None, schedule: str = "dynamic",
          chunk: int | None = None) -> None:
    """Under mpiexec: one run; rank 0 prints engine seconds and every rank's peak RSS (MB)."""
    import resource

    from mtcmpi.job import run_job
    from mtcmpi.options import RunOptions
    from mtcmpi.tasks import CountSource
    from mtcmpi.world import World

    world = World.of()
    outcome = run_job(world, target, CountSource(n),
                      RunOptions(out=out, compression=compression, quiet=True, schedule=schedule, chunk=chunk))
    rss = world.comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, root=0)
    if outcome.summary:
        s = outcome.summary   # engine time until the file is in place: the engine, then the store
        print(json.dumps({"engine": s.engine + s.store, "store": s.store, "rss": rss}))


def run(ranks: int, target: str, n: int, out: str | None, compression: str | None,
        schedule: str = "dynamic", chunk: int | None = None) -> dict:
    os.sync()   # the last run's dirty pages would slow this one's writes (and the baseline's)
    args = [os.path.abspath(__file__), "--child", target, "-n", str(n), "--schedule", schedule]
    args += ["--chunk", str(chunk)] if chunk else []
    args += (["--out", out] if out else []) + (["--compression", compression] if compression else [])
    env = {"PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}
    return last_json(mpirun(ranks, args, timeout=1800, env=env).stdout)


def littlewood(ranks: int, n: int) -> None:
    """The Littlewood grids (one 421 x 301 int64 grid per task): file size and store time
    without compression, with gzip:4 and with lzf; RESULT line of the ratios."""
    figures = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("MTCMPI_BENCH_DIR")) as tmp:
        for compression in (None, "gzip:4", "lzf"):
            out = os.path.join(tmp, "grids.h5")
            summary = run(ranks, "kernels.littlewood:task", n, out, compression)
            size = os.path.getsize(out)
            figures[compression or "none"] = (size, summary["store"])
            print(f"littlewood, {n} grids on {ranks} ranks, {compression or 'no compression'}: file "
                  f"{size / 1e6:.1f} MB, file written in {summary['store']:.2f} s "
                  f"(engine {summary['engine']:.2f} s; load {os.getloadavg()[0]:.1f})")
            os.remove(out)
    base = figures["none"][0]
    print("RESULT " + " ".join(f"{k.replace(':', '')}_size_ratio={v[0] / base:.3f} {k.replace(':', '')}_store_s={v[1]:.2f}"
                               for k, v in figures.items()))


def linear(ranks: int, quick: bool) -> None:
    """Store time (finishing the file after the last task) of no-op tasks returning a number,
    10^4 to 10^6 of them (10^5 with --quick), under static, static:cyclic and dynamic --chunk 1:
    it must grow linearly with the tasks whatever the schedule (scattered ids once made it
    quadratic). RESULT: the largest per-task store time over the smallest, per schedule."""
    sizes = [10_000, 100_000] + ([] if quick else [1_000_000])
    worst = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("MTCMPI_BENCH_DIR")) as tmp:
        for schedule, chunk in (("static", None), ("static:cyclic", None), ("dynamic", 1)):
            per_task = []
            for n in sizes:
                out = os.path.join(tmp, "linear.h5")
                got = run(ranks, "output:scalar", n, out, None, schedule, chunk)
                os.remove(out)
                per_task.append(got["store"] / n * 1e6)
                print(f"{schedule}{' --chunk 1' if chunk else ''}, {n:,} tasks: store {got['store']:.2f} s "
                      f"({per_task[-1]:.2f} us a task; engine {got['engine']:.2f} s; load {os.getloadavg()[0]:.1f})")
            worst[schedule.replace(":", "_") + ("_chunk1" if chunk else "")] = max(per_task) / per_task[0]
    print("RESULT " + " ".join(f"{k}_growth={v:.2f}" for k, v in worst.items()))


def single_writer(n: int, row: int, path: str) -> float:
    """Seconds for one process to write n rows of `row` float64 with plain h5py, made a block
    at a time (32 MiB) as a careful writer would, not all held at once."""
    import h5py
    import numpy as np
    step = max(1, (32 << 20) // (8 * row))
    os.sync()
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("value", (n, row), dtype=np.float64)
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            ds[lo:hi] = np.repeat(np.arange(lo, hi, dtype=np.float64)[:, None], row, axis=1)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="a tenth of the tasks")
    parser.add_argument("--compression", help="pass --compression to the runs with --out")
    parser.add_argument("--littlewood", type=int, metavar="N", help="measure compression on N grids")
    parser.add_argument("--linear", action="store_true", help="store time against the number of tasks")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--schedule", default="dynamic", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.n, args.out, args.compression, args.schedule, args.chunk)
    if args.linear:
        return linear(args.ranks, args.quick)
    if args.littlewood:
        return littlewood(args.ranks, args.littlewood)
    figures = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("MTCMPI_BENCH_DIR")) as tmp:
        for kind, (n, row) in SIZES.items():
            n = n // 10 if args.quick else n
            mb = n * row * 8 / 1e6
            bare = run(args.ranks, f"output:{kind}", n, None, None)
            stored = run(args.ranks, f"output:{kind}", n, os.path.join(tmp, f"{kind}.h5"), args.compression)
            os.remove(os.path.join(tmp, f"{kind}.h5"))
            single = mb / single_writer(n, row, os.path.join(tmp, "single.h5"))
            os.remove(os.path.join(tmp, "single.h5"))
            took = stored["engine"] + stored["store"]
            rate = mb / took
            print(f"{kind}: {n:,} tasks x {row * 8 // 1024} KiB = {mb:,.0f} MB on {args.ranks} ranks")
            print(f"  without --out: engine {bare['engine']:.2f} s ({mb / bare['engine']:,.0f} MB/s), "
                  f"peak RSS per rank {', '.join(f'{r:.0f}' for r in bare['rss'])} MB")
            print(f"  with --out:    engine {stored['engine']:.2f} s + store {stored['store']:.2f} s = "
                  f"{took:.2f} s ({rate:,.0f} MB/s end to end), peak RSS per rank "
                  f"{', '.join(f'{r:.0f}' for r in stored['rss'])} MB")
            print(f"  one process, plain h5py, same bytes: {single:,.0f} MB/s; ratio {rate / single:.2f}"
                  f"   (load {os.getloadavg()[0]:.1f})")
            figures[kind] = (max(stored["rss"]), rate / single)
    print(f"RESULT big_rss_mb={figures['big'][0]:.0f} small_rss_mb={figures['small'][0]:.0f} "
          f"big_ratio={figures['big'][1]:.2f} small_ratio={figures['small'][1]:.2f}")


if __name__ == "__main__":
    main()
