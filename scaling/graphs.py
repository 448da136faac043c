"""Task graphs: dataflow throughput against Dask distributed, a dependent chain, and the Littlewood
pipeline against the four separate commands of README's Littlewood section.

    python scaling/graphs.py [--quick] [--ranks 3] [--degree 16]

* fan-out/fan-in: GROUPS groups of 100 no-op tasks, each group feeding one reducer that takes the
  group's 100 futures as its argument (101,000 calls in all at full size), on 1 master + 1 worker
  (mpiexec -n 2, mtcmpi.Executor.submit with futures as arguments); the same graph shape on Dask
  distributed (LocalCluster, one worker process with one thread, client.submit with futures as
  arguments), in the same run, with --dask-groups groups (100 by default: see its help).
  tasks/s = calls / (first submit to last reducer's result).
* chain: 10,000 calls, each taking the previous call's future, on 1 master + 1 worker.
* --profile: only the fan-out/fan-in graph, with cProfile on rank 0's two threads (the driver's,
  which submits, and the Executor's dispatcher), printing the top functions of each.
* pipeline: `mtcmpi pipeline examples/lw_pipeline.py` end to end against the four commands
  (params CSV, mpirun ... run --schedule static --out, reduce, render), same degree, same ranks
  (default 3: rank 0 of the pipeline drives and does not compute, so on this 2-core machine
  -n 3 gives both two computing processes), each timed from launch to PNG, best of --repeat.

Last line: RESULT graph_tps=<x> dask_tps=<x> ratio=<x> chain_tps=<x> pipeline_ratio=<x>
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import ROOT, environment, last_json, mpirun  # noqa: E402

GROUP = 100
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def noop(x=None):
    return None


def reducer(values):
    return len(values)


def fan(submit, result, groups: int) -> float:
    """Calls per second of the fan-out/fan-in graph through a submit(fn, *args) and result(f)."""
    start = time.perf_counter()
    tops = [submit(reducer, [submit(noop, g * GROUP + i) for i in range(GROUP)]) for g in range(groups)]
    assert all(result(t) == GROUP for t in tops)
    return groups * (GROUP + 1) / (time.perf_counter() - start)


def child_graph(groups: int, chain: int, profile: bool = False) -> None:
    """Under mpiexec -n 2: the graph and the chain on mtcmpi.Executor; prints JSON (or, with
    profile, rank 0's profile of the graph)."""
    from mtcmpi.futures import executor

    if profile:
        return profiled_graph(groups)
    with executor() as ex:
        if ex is None:
            return
        tps = fan(ex.submit, lambda f: f.result(), groups)
        start = time.perf_counter()
        value = ex.submit(noop)
        for _ in range(chain - 1):
            value = ex.submit(noop, value)
        value.result()
        print(json.dumps({"graph_tps": tps, "chain_tps": chain / (time.perf_counter() - start)}))


def profiled_graph(groups: int) -> None:
    """The graph with cProfile on rank 0's driver thread and dispatcher thread."""
    import cProfile
    import pstats

    from mtcmpi.futures import dispatch, executor

    profiles, run = [], dispatch.Dispatch.run

    def profiled_run(self):   # the dispatcher thread's whole life
        profiles.append(cProfile.Profile())
        profiles[-1].runcall(run, self)
    dispatch.Dispatch.run = profiled_run
    with executor() as ex:
        if ex is not None:
            driver = cProfile.Profile()
            tps = driver.runcall(fan, ex.submit, lambda f: f.result(), groups)
    if profiles:
        print(f"graph_tps={tps:.0f} (under the profiler)")
        for name, profile in (("driver thread", driver), ("dispatcher thread", profiles[0])):
            print(f"--- rank 0, {name}")
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)


def dask_tps(groups: int) -> tuple[float | None, str]:
    """The same graph on Dask distributed with one single-threaded worker process."""
    try:
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.submit(noop).result()   # the worker is up
            return fan(lambda fn, *a: client.submit(fn, *a, pure=False), lambda f: f.result(), groups), ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def timed(commands: list[list[str]], env: dict, cwd: str) -> float:
    """Seconds to run the commands one after the other (each must succeed)."""
    start = time.perf_counter()
    for cmd in commands:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return time.perf_counter() - start


def pipeline_ratio(ranks: int, degree: int, size: int, tasks: int, repeat: int) -> tuple[float, float]:
    """Best seconds of (the pipeline, the four commands), grids checked equal."""
    import numpy as np

    py, mpi = sys.executable, ["mpiexec", "-n", str(ranks)]
    best = [float("inf"), float("inf")]
    with tempfile.TemporaryDirectory() as tmp:
        env = environment({**ONE_THREAD, "LW_DEGREE": str(degree), "LW_SIZE": str(size),
                           "LW_TASKS": str(tasks), "LW_DIR": os.path.join(tmp, "lw")})
        lw = ["-m", "kernels.littlewood", "--degree", str(degree), "--size", str(size)]
        separate = [[py, *lw, "--tasks", str(tasks), "--params", f"{tmp}/lw.csv"],
                    [*mpi, py, "-m", "mtcmpi", "run", "kernels.littlewood:orbit_hits", "--params",
                     f"{tmp}/lw.csv", "--schedule", "static", "--out", f"{tmp}/lw.h5", "--quiet"],
                    [py, "-m", "mtcmpi", "reduce", f"{tmp}/lw.h5", "--save", f"{tmp}/grid.npy"],
                    [py, "-m", "kernels.littlewood", "--render", f"{tmp}/grid.npy", "--png", f"{tmp}/lw.png"]]
        piped = [[*mpi, py, "-m", "mtcmpi", "pipeline", os.path.join(ROOT, "examples", "lw_pipeline.py"),
                  "--out", f"{tmp}/lwp.h5", "--restart"]]
        for _ in range(repeat):
            for path in (f"{tmp}/lw.h5", f"{tmp}/lw.h5.journal"):
                if os.path.exists(path):
                    os.remove(path)
            best[1] = min(best[1], timed(separate, env, ROOT))
            best[0] = min(best[0], timed(piped, env, ROOT))
            if not np.array_equal(np.load(f"{tmp}/grid.npy"), np.load(f"{tmp}/lw/grid.npy")):
                raise RuntimeError("the pipeline's grid differs from the separate commands' grid")
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 groups, a 2,000-call chain, degree 12")
    parser.add_argument("--ranks", type=int, default=3, help="ranks of both Littlewood runs (default 3)")
    parser.add_argument("--degree", type=int, help="Littlewood degree (default 16; 12 with --quick)")
    parser.add_argument("--repeat", type=int, default=3, help="Littlewood trials; the best counts")
    parser.add_argument("--dask-groups", type=int, default=100, help="groups of Dask's run of the same "
                        "graph shape (default 100: Dask runs ~100-1,000 tasks/s here, so 1,000 groups "
                        "would take many minutes)")
    parser.add_argument("--profile", action="store_true", help="profile rank 0 on the graph (only)")
    parser.add_argument("--child", nargs=2, type=int, metavar=("GROUPS", "CHAIN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_graph(*args.child, profile=args.profile)
    groups, chain = (100, 2_000) if args.quick else (1_000, 10_000)
    if args.profile:
        print(mpirun(2, [os.path.abspath(__file__), "--profile", "--child", str(groups), "0"],
                     env=environment(ONE_THREAD)).stdout)
        return
    degree = args.degree or (12 if args.quick else 16)
    ours = last_json(mpirun(2, [os.path.abspath(__file__), "--child", str(groups), str(chain)],
                            env=environment(ONE_THREAD)).stdout)
    dask, why = dask_tps(min(groups, args.dask_groups))
    piped, separate = pipeline_ratio(args.ranks, degree, 200, 8, args.repeat)
    calls = groups * (GROUP + 1)
    print(f"fan-out/fan-in, {groups} groups of {GROUP} no-ops + 1 reducer each ({calls:,} calls), 1 master + 1 worker:")
    print(f"  mtcmpi.Executor   {ours['graph_tps']:>10,.0f} tasks/s")
    dask_calls = min(groups, args.dask_groups) * (GROUP + 1)
    print("  Dask distributed  " + (f"{dask:>10,.0f} tasks/s ({dask_calls:,} calls)" if dask
                                    else f"unavailable: {why}"))
    print(f"chain of {chain:,} dependent no-op calls: {ours['chain_tps']:,.0f} calls/s")
    print(f"Littlewood degree {degree}, {args.ranks} ranks, launch to PNG (best of {args.repeat}): "
          f"pipeline {piped:.2f} s, four separate commands {separate:.2f} s")
    ratio = ours["graph_tps"] / dask if dask else float("nan")
    print(f"RESULT graph_tps={ours['graph_tps']:.0f} dask_tps={dask or 0:.0f} ratio={ratio:.1f} "
          f"chain_tps={ours['chain_tps']:.0f} pipeline_ratio={piped / separate:.2f}")


if __name__ == "__main__":
    main()
