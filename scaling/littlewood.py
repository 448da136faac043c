"""Seed workload 2 end to end: the Littlewood fractal, from launch to PNG, on 1 and 2 ranks.

    python scaling/littlewood.py [--degree 16] [--size 200] [--tasks 8] [--repeat 3]

Each trial is what a user runs, timed from launch until the PNG is written:

    mpiexec -n R python -m mtcmpi run kernels.littlewood:TARGET --params lw.csv --schedule static --out lw.h5

then one process that reduces lw.h5 to the full grid (mtcmpi.reduce) and renders it
(kernels.littlewood.render). TARGET is hits (one eigvals per polynomial) and orbit_hits (one
per orbit under z -> -z, 1/z: a quarter of the LAPACK work), fed the same params CSV; every
trial's grid is checked, cell for cell, against hits(0, 2**degree) computed here. Apart from
the end-to-end wall time it prints the run's MPI start-up, engine and store times (from the
summary), the finishing process's import (numpy, h5py), reduce and render (with matplotlib's
import) times, and the kernel's split (companion matrices, eigvals, binning) per polynomial.
Every process is held to one BLAS thread (OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=1), so that 2
ranks on 2 cores do not oversubscribe them. Figures are the best of --repeat trials; the
RESULT line is orbit_hits's. Last line: RESULT degree=<d> t1_s=<...> t2_s=<...>
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import ROOT, environment, last_json, mpirun  # noqa: E402

TARGETS = ("hits", "orbit_hits")
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SUMMARY = {"startup": r"start-up ([\d.]+) s", "engine": r"engine ([\d.]+) s",
           "store": r"written in ([\d.]+) s"}   # figures of the run's summary
COLUMNS = ("total", "run", "startup", "engine", "store", "finish", "import", "reduce", "render")


def child_finish(h5: str, png: str, npy: str) -> None:
    """The step after the run: reduce the results file to one grid, render the PNG, save the grid."""
    t0 = time.perf_counter()
    import numpy as np

    from kernels import littlewood as lw
    from mtcmpi.reduce import reduce
    t1 = time.perf_counter()
    grid = reduce(h5, "value", "sum")
    t2 = time.perf_counter()
    lw.render(grid, png)
    t3 = time.perf_counter()
    np.save(npy, grid)
    print(json.dumps({"import": t1 - t0, "reduce": t2 - t1, "render": t3 - t2}))


def trial(target: str, ranks: int, csv: str, tmp: str) -> dict:
    """One end-to-end trial: the mtcmpi run, then the finishing process; seconds by step."""
    h5, png, npy = (os.path.join(tmp, name) for name in ("lw.h5", "lw.png", "grid.npy"))
    for path in (h5, png, npy):
        if os.path.exists(path):
            os.remove(path)
    t0 = time.perf_counter()
    run = mpirun(ranks, ["-m", "mtcmpi", "run", f"kernels.littlewood:{target}", "--params", csv,
                         "--schedule", "static", "--out", h5], timeout=600, env=ONE_THREAD)
    t1 = time.perf_counter()
    finish = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", h5, png, npy],
                            capture_output=True, text=True, timeout=600, env=environment(ONE_THREAD),
                            cwd=ROOT, check=True)
    t2 = time.perf_counter()
    if not os.path.getsize(png):
        raise RuntimeError(f"{png} is empty")
    figures = {key: float(re.search(pattern, run.stdout).group(1)) for key, pattern in SUMMARY.items()}
    return {"total": t2 - t0, "run": t1 - t0, "finish": t2 - t1, **figures,
            **last_json(finish.stdout), "npy": npy}


def kernel_split(degree: int, size: int) -> dict:
    """Microseconds per polynomial of each step of hits(), over its first batch."""
    import numpy as np

    from kernels import littlewood as lw
    numbers = np.arange(min(lw.BATCH, 2 ** degree), dtype=np.int64)
    t0 = time.perf_counter()
    matrices = lw.companions(numbers, degree)
    t1 = time.perf_counter()
    roots = np.linalg.eigvals(matrices).ravel()
    t2 = time.perf_counter()
    lw.bin_roots(roots, size)
    t3 = time.perf_counter()
    return {step: 1e6 * seconds / len(numbers) for step, seconds in
            (("companions", t1 - t0), ("eigvals", t2 - t1), ("binning", t3 - t2))}


def reference(degree: int, size: int):
    """hits(0, 2**degree) in this process, timed and checked against orbit_hits; the kernel split."""
    import numpy as np

    from kernels import littlewood as lw
    grids, seconds = {}, {}
    for target in TARGETS:
        t0 = time.perf_counter()
        grids[target] = getattr(lw, target)(0, 2 ** degree, degree, size)
        seconds[target] = time.perf_counter() - t0
    if not np.array_equal(grids["hits"], grids["orbit_hits"]):
        raise SystemExit("orbit_hits(0, 2**degree) differs from hits(0, 2**degree)")
    split = kernel_split(degree, size)
    print(f"in one process, degree {degree}, size {size}: hits {seconds['hits']:.2f} s, orbit_hits "
          f"{seconds['orbit_hits']:.2f} s (equal grids); hits per polynomial: "
          + ", ".join(f"{step} {us:.1f} us" for step, us in split.items()))
    return grids["hits"]


def show(target: str, ranks: int, t: dict) -> None:
    print(f"{target:<10} {ranks:>5} " + " ".join(f"{t[c]:>8.2f}" for c in COLUMNS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--degree", type=int, default=16)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=8, help="params rows (chunks of the polynomials); "
                        "each returns a whole grid, 1 MiB at size 200 (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="trials per target and rank count; "
                        "the best is reported")
    parser.add_argument("--child", nargs=3, metavar=("H5", "PNG", "NPY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(ONE_THREAD)    # before numpy is imported, here and in every child
    if args.child:
        return child_finish(*args.child)

    import numpy as np

    from kernels import littlewood as lw
    whole = reference(args.degree, args.size)
    print(f"{'target':<10} {'ranks':>5} " + " ".join(f"{c:>8}" for c in COLUMNS))
    best: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "lw.csv")
        lw.main(["--degree", str(args.degree), "--size", str(args.size), "--tasks", str(args.tasks),
                 "--params", csv])
        for target in TARGETS:
            for ranks in (1, 2):
                for _ in range(args.repeat):
                    t = trial(target, ranks, csv, tmp)
                    if not np.array_equal(np.load(t["npy"]), whole):
                        raise SystemExit(f"{target} on {ranks} ranks: the grid differs from hits()")
                    show(target, ranks, t)
                    best[target, ranks] = min(best.get((target, ranks), t["total"]), t["total"])
    print(f"every grid equal to the in-process hits(0, 2**{args.degree}) ({int(whole.sum()):,} hits); "
          f"best end to end: hits {best['hits', 1]:.2f} s on 1 rank, {best['hits', 2]:.2f} s on 2")
    print(f"RESULT degree={args.degree} t1_s={best['orbit_hits', 1]:.2f} t2_s={best['orbit_hits', 2]:.2f}")


if __name__ == "__main__":
    main()
