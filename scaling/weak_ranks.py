"""The ranks' side of scaling/weak.py: what runs under mpiexec, apart from the harness.

    mpiexec -n N python scaling/weak_ranks.py POLICIES PER_WORKER SCALE SEED OUTDIR
    mpiexec -n N python -m mpi4py.futures scaling/weak_ranks.py futures PER_WORKER SCALE SEED

Every rank of the mtcmpi launch runs this file, as the one Python process of a user's job runs
theirs (`python -m mtcmpi run` runs compiled modules), and mpi4py.futures' workers never read it.
So it is short and imports only what the ranks use: when they ran weak.py itself (356 lines
then), each mtcmpi rank spent ~3 ms of CPU compiling it, which no futures worker did (~0.1 s of
start-up on 64 ranks sharing 2 cores); this file takes ~0.5 ms.
"""
import os
import sys
import time


def items(workers: int, per_worker: int, scale: float, seed: int) -> list:
    """The arguments of kernels.sleep.task for one run."""
    return [(i, scale, seed) for i in range(workers * per_worker)]


def child_mtcmpi(policies: list, per_worker: int, scale: float, seed: int, outdir: str) -> None:
    """Each mtcmpi policy in turn, with --out; rank 0 prints one JSON per run."""
    from mtcmpi.startup import init_mpi

    size, startup, phases = init_mpi().Get_size(), None, None   # MPI_Init timed as `mtcmpi run` does
    from kernels.sleep import task
    from mtcmpi.job import run_job
    from mtcmpi.options import RunOptions
    from mtcmpi.tasks import ItemsSource
    from mtcmpi.world import World

    for name in policies:
        by_cost = name == "cost"
        workers = size if name == "static" else size - 1
        results = os.path.join("runs", f"{name}-{size}.h5")
        outcome = run_job(World.of(), task, ItemsSource(items(workers, per_worker, scale, seed), star=True),
                          RunOptions(schedule="dynamic" if by_cost else name, quiet=True,
                                     out=os.path.join(outdir, results), restart=True,
                                     cost="kernels.sleep:duration" if by_cost else None))
        s = outcome.summary
        if s:
            import json   # rank 0's alone, as h5py: ~1.4 ms of CPU per rank on a full node

            import h5py   # rank 0 reads the file; the ranks import h5py only to write it

            startup = s.startup if startup is None else startup   # later runs: no new launch
            phases = phases or s.startup_phases
            with h5py.File(os.path.join(outdir, results), "r") as f:
                engine = float(f["tasks"]["end"].max() - f.attrs["start_time"])
            print(json.dumps({"policy": name, "workers": workers, "startup": startup,
                              "engine": engine, "wrap": s.engine - engine,
                              "store": s.store, "results_file": results,
                              "ok": s.total.ran - s.total.failed, "startup_phases": phases}), flush=True)


def child_futures(per_worker: int, scale: float, seed: int) -> None:
    """Under `mpiexec python -m mpi4py.futures`: the same tasks through MPIPoolExecutor.map."""
    import json

    from mpi4py.futures import MPIPoolExecutor

    from kernels.sleep import task

    launched = float(os.environ["MTCMPI_LAUNCH_TIME"])
    with MPIPoolExecutor() as pool:
        pool.bootup()
        workers = pool.num_workers
        ready = time.time()
        args = list(zip(*items(workers, per_worker, scale, seed)))
        done = sum(1 for _ in pool.map(task, *args))
        print(json.dumps({"policy": "futures", "workers": workers, "startup": ready - launched,
                          "engine": time.time() - ready, "wrap": 0.0, "store": 0.0, "results_file": "",
                          "ok": done}))


if __name__ == "__main__":   # futures|POLICIES PER_WORKER SCALE SEED [OUTDIR], parsed by hand
    which, per_worker, scale, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    if which == "futures":
        child_futures(per_worker, scale, seed)
    else:
        child_mtcmpi(which.split(","), per_worker, scale, seed, sys.argv[5])
