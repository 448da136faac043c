"""Start-up of mtcmpi against plain mpi4py and mpi4py.futures, and the files a rank touches.

    python scaling/startup.py [--ranks 2,4] [--repeat 2] [--strace-ranks 4]

Start-up = launch (mpiexec started) until every rank is ready, as each tool defines ready:
plain mpi4py: every rank imported mpi4py.MPI and the task module (kernels.sleep) and passed a
barrier; mpi4py.futures: MPIPoolExecutor.bootup() returned; mtcmpi: `mtcmpi run` summary's
start-up (ready to hand out the first task), without --out, with --out, and with the import
broadcast (--import-broadcast); and the CPU seconds per rank of each job (all its processes over
their whole life, from getrusage: on a node with fewer cores than ranks, start-up is about the
ranks' CPU over the cores). Tools take turns within each repetition, so a change in the
machine's load hits them alike; the figure is the median over --repeat.

File operations: `strace -c -f -e trace=%file` around rank 1 of a --strace-ranks job (an
MPMD launch: the other ranks run untraced), the whole life of that rank (start-up and a
few no-op tasks). Open MPI's own plugin loading is most of plain mpi4py's count.

mtcmpi and kernels/ are byte-compiled first (compile_sources), as an installed package is.

Last line: RESULT ranks=<largest> startup_ratio=<mtcmpi/futures> startup_ratio_out=<...>
fileops_ratio_broadcast=<mtcmpi with broadcast / plain mpi4py> (and the raw figures).
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import ROOT, environment, mpirun  # noqa: E402

PLAIN = ("import os, time; from mpi4py import MPI; import kernels.sleep; MPI.COMM_WORLD.Barrier(); "
         "MPI.COMM_WORLD.Get_rank() or print('STARTUP', time.time() - float(os.environ['MTCMPI_LAUNCH_TIME']))")
FUTURES = ("import os, time\nfrom mpi4py.futures import MPIPoolExecutor\nimport kernels.sleep\n"
           "if __name__ == '__main__':\n    with MPIPoolExecutor() as pool:\n        pool.bootup()\n"
           "        print('STARTUP', time.time() - float(os.environ['MTCMPI_LAUNCH_TIME']))\n"
           "        list(pool.map(kernels.sleep.work, [0.0] * 4))\n")   # a file: workers import it
MTCMPI = ["-m", "mtcmpi", "run", "kernels.noop:none", "--quiet"]
TOOLS = {   # name: python arguments (the task count is added per job)
    "mpi4py": ["-c", PLAIN],
    "futures": ["-m", "mpi4py.futures", "{tmp}/futures_main.py"],
    "mtcmpi": MTCMPI,
    "mtcmpi_out": MTCMPI + ["--out", "{tmp}/out.h5", "--restart"],
    "mtcmpi_bcast": MTCMPI + ["--import-broadcast"],
}


def args_of(tool: str, ranks: int, tmp: str) -> list[str]:
    """The python arguments of one tool's job (mtcmpi: one no-op task per rank)."""
    args = [a.replace("{tmp}", tmp) for a in TOOLS[tool]]
    return args + ["--count", str(ranks)] if tool.startswith("mtcmpi") else args


def startup_of(output: str) -> float:
    """The start-up a job printed: 'STARTUP s', or mtcmpi's summary 'start-up s s'."""
    found = re.search(r"STARTUP ([0-9.]+)|start-up ([0-9.]+) s", output)
    if not found:
        raise RuntimeError(f"no start-up figure in:\n{output}")
    return float(found.group(1) or found.group(2))


def timed(tool: str, ranks: int, tmp: str) -> tuple[float, float]:
    """One job's start-up and the CPU seconds of all its processes (mpiexec and every rank,
    which mpiexec waits for, over their whole life), in seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    took = startup_of(mpirun(ranks, args_of(tool, ranks, tmp), timeout=900).stdout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def file_operations(tool: str, ranks: int, tmp: str) -> int:
    """Filename system calls (strace %file) made by rank 1 of a `ranks`-rank job."""
    trace = os.path.join(tmp, f"strace-{tool}.txt")
    argv = [sys.executable, *args_of(tool, ranks, tmp)]
    traced = ["strace", "-f", "-c", "-e", "trace=%file", "-o", trace, *argv]
    cmd = ["mpiexec", "-n", "1", *argv, ":", "-n", "1", *traced]
    if ranks > 2:
        cmd += [":", "-n", str(ranks - 2), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=environment(),
                          start_new_session=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    with open(trace) as f:
        total = [line for line in f if line.rstrip().endswith(" total")]
    return int(total[-1].split()[3])


def compile_sources() -> None:
    """Byte-compile mtcmpi and kernels/ as an installation does: with PYTHONDONTWRITEBYTECODE set
    (as on this machine) every rank would compile each of mtcmpi's modules from source at every
    start, a cost no installed package has (mpi4py's and numpy's modules are compiled)."""
    import compileall

    for package in ("mtcmpi", "kernels"):
        compileall.compile_dir(os.path.join(ROOT, package), quiet=1)


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="2,4", help="comma-separated rank counts")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions (median)")
    parser.add_argument("--strace-ranks", type=int, default=4, help="job size for the file "
                        "operation count (0: skip)")
    parser.add_argument("--tools", default=",".join(TOOLS))
    args = parser.parse_args()
    tools = args.tools.split(",")
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {','.join(TOOLS)}")
    ranks = [int(r) for r in args.ranks.split(",")]
    compile_sources()
    tmp = tempfile.mkdtemp(prefix="mtcmpi-startup-")
    with open(os.path.join(tmp, "futures_main.py"), "w") as f:
        f.write(FUTURES)
    try:
        times: dict[tuple[int, str], list[float]] = {}
        cpu: dict[tuple[int, str], list[float]] = {}
        print(f"{'ranks':>5} " + " ".join(f"{t:>13}" for t in tools) + "   (start-up, s; median)", flush=True)
        for n in ranks:
            for _ in range(args.repeat):
                for tool in tools:
                    took, used = timed(tool, n, tmp)
                    times.setdefault((n, tool), []).append(took)
                    cpu.setdefault((n, tool), []).append(used / n)
            print(f"{n:5d} " + " ".join(f"{median(times[n, t]):13.2f}" for t in tools), flush=True)
            print(f"{'':5} " + " ".join(f"{median(cpu[n, t]):13.3f}" for t in tools)
                  + "   (CPU seconds per rank, the job's whole life; median)", flush=True)
        ops = {}
        if args.strace_ranks and shutil.which("strace"):
            print(f"file operations of rank 1 in a {args.strace_ranks}-rank job (strace -c -e trace=%file):")
            for tool in tools:
                ops[tool] = file_operations(tool, args.strace_ranks, tmp)
                print(f"  {tool:13} {ops[tool]:6d}", flush=True)
        elif args.strace_ranks:
            print("strace not found: no file operation count (apt-get install strace)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    top = max(ranks)
    at = {t: median(times[top, t]) for t in tools}
    fields = [f"ranks={top}"] + [f"startup_{t}={at[t]:.3f}" for t in tools]
    fields += [f"cpu_per_rank_{t}={median(cpu[top, t]):.3f}" for t in tools]
    if "futures" in at:
        fields += [f"startup_ratio={at[k] / at['futures']:.3f}".replace("startup_ratio", name)
                   for k, name in (("mtcmpi", "startup_ratio"), ("mtcmpi_out", "startup_ratio_out"),
                                   ("mtcmpi_bcast", "startup_ratio_broadcast")) if k in at]
    fields += [f"fileops_{t}={ops[t]}" for t in ops]
    if "mpi4py" in ops:
        fields += [f"fileops_ratio{suffix}={ops[k] / ops['mpi4py']:.3f}"
                   for k, suffix in (("mtcmpi", ""), ("mtcmpi_bcast", "_broadcast")) if k in ops]
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
