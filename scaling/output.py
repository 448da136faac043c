"""What --out costs: the sleep benchmark with and without it, and write bandwidth.

    python scaling/output.py [--quick] [--ranks 8]

1. The sleep benchmark (kernels.sleep:task, 10 tasks per worker, uniform(27,33) x 0.01 s),
   dynamic, with and without --out: the overhead is the difference in engine time (first task
   handed out until the file is in place), as a share of the run without --out.
2. N results of 1 MiB each (float64 arrays): the time mtcmpi spends writing the results file
   collectively, against a single process writing the same bytes with plain h5py.
Last line: RESULT overhead_pct=<...> collective_mib_s=<...> single_mib_s=<...>
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

MIB_FLOATS = 1 << 17   # 1 MiB of float64


def megabyte(i: int):
    """A 1 MiB result."""
    import numpy as np
    return np.full(MIB_FLOATS, float(i))


def child(kind: str, n: int, out: str | None) -> None:
    """Under mpiexec: one run; rank 0 prints engine and store seconds."""
    from mtcmpi.job import run_job
    from mtcmpi.options import RunOptions
    from mtcmpi.tasks import CountSource
    from mtcmpi.world import World

    target = "kernels.sleep:task" if kind == "sleep" else "output:megabyte"
    outcome = run_job(World.of(), target, CountSource(n), RunOptions(out=out, quiet=True))
    if outcome.summary:
        s = outcome.summary   # engine time until the file is in place: the engine, then the store
        print(json.dumps({"engine": s.engine + s.store, "store": s.store}))


def run(ranks: int, kind: str, n: int, out: str | None) -> dict:
    args = [os.path.abspath(__file__), "--child", kind, "-n", str(n)] + (["--out", out] if out else [])
    return last_json(mpirun(ranks, args, env={"PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}).stdout)


def single_writer(n: int, path: str) -> float:
    """Seconds for one process to write n x 1 MiB with plain h5py (data made beforehand)."""
    import h5py
    import numpy as np
    data = np.stack([megabyte(i) for i in range(n)])
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        f["value"] = data
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.n, args.out)
    tasks = 10 * (args.ranks - 1)
    arrays = 64 if args.quick else 256
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.h5")
        bare = min(run(args.ranks, "sleep", tasks, None)["engine"] for _ in range(2))
        stored = []
        for i in range(2):
            stored.append(run(args.ranks, "sleep", tasks, out + str(i)))
        best = min(stored, key=lambda r: r["engine"])
        overhead = 100 * (best["engine"] - bare) / bare
        print(f"sleep benchmark, {args.ranks} ranks, {tasks} tasks: engine {bare:.3f} s without --out, "
              f"{best['engine']:.3f} s with (file written in {best['store']:.3f} s): overhead {overhead:.2f}%")
        big = run(args.ranks, "megabyte", arrays, os.path.join(tmp, "big.h5"))
        collective = arrays / big["store"]
        single = arrays / single_writer(arrays, os.path.join(tmp, "single.h5"))
        print(f"{arrays} results of 1 MiB: written collectively by {args.ranks} ranks in {big['store']:.3f} s "
              f"({collective:.0f} MiB/s); one process with plain h5py: {single:.0f} MiB/s")
    print(f"RESULT overhead_pct={overhead:.2f} collective_mib_s={collective:.0f} single_mib_s={single:.0f}")


if __name__ == "__main__":
    main()
