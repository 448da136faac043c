"""Seed workload 1: "touch an .out for every .inp", mtcmpi against GNU parallel and make.

    python scaling/tools.py [--quick] [--files N] [--cores C]

N empty inputs (9,999, as the user had; --quick 2,000) are made with kernels.touch.make_inputs
in a temporary directory, and each tool makes every <stem>.out from scratch (outputs removed
between runs), with `cores` commands at a time:

  mtcmpi_cmd   mpiexec -n cores+1 python -m mtcmpi run --command 'python kernels/touch.py {}'
               --files 'data/*.inp' (dynamic: rank 0 hands out tasks, `cores` workers run them)
  static       the same on -n cores with --schedule static (no master), for comparison
  parallel     GNU parallel -j cores, the same command, one input per job (inputs on stdin)
  make         make -j cores with the pattern rule %.out: %.inp running the same command
  mtcmpi_py    mpiexec -n cores+1 python -m mtcmpi run kernels.touch:touch --params paths.csv
               (the same work as a Python function: no process per file)
  rerun        mtcmpi_cmd again with --skip-existing '{.}.out': every task must be skipped

Fairness: parallel and make are one dispatching process plus `cores` jobs; dynamic mtcmpi on
cores+1 ranks is the same shape (rank 0 dispatches and mostly sleeps). Every time is wall clock
from launch to exit, MPI start-up included; the command is the venv's Python with absolute paths.
Last line: RESULT files=<n> mtcmpi_cmd_s=<...> parallel_s=<...> make_s=<...> mtcmpi_py_s=<...> rerun_s=<...>
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mpirun import ROOT, environment, mpirun  # noqa: E402

RUNNER = os.path.join(ROOT, "kernels", "touch.py")
COMMAND = f"{shlex.quote(sys.executable)} {shlex.quote(RUNNER)}"   # + ' {}' (mtcmpi adds it)
MAKEFILE = """\
OUTPUTS := $(patsubst %.inp,%.out,$(wildcard data/*.inp))
all: $(OUTPUTS)
%.out: %.inp
\t{command} $<
"""


def timed(launch) -> tuple[float, str]:
    """(wall seconds, stdout) of one launch: a function returning a CompletedProcess."""
    t0 = time.perf_counter()
    proc = launch()
    return time.perf_counter() - t0, proc.stdout


def shell_tool(args: list[str], work: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run parallel or make in the work directory; raise with its output if it fails."""
    return subprocess.run(args, input=stdin, capture_output=True, text=True, cwd=work, check=True,
                          env=environment(), timeout=3600)


def mtcmpi(ranks: int, args: list[str]) -> subprocess.CompletedProcess:
    return mpirun(ranks, ["-m", "mtcmpi", "run", *args], timeout=3600)


def launchers(work: str, inputs: list[str], cores: int) -> dict:
    """Write the params CSV and the Makefile; the launcher of each tool, by name, in run order."""
    files = ["--command", COMMAND, "--files", os.path.join(work, "data", "*.inp")]
    params = os.path.join(work, "paths.csv")
    with open(params, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path"], *([p] for p in inputs)])
    with open(os.path.join(work, "Makefile"), "w", encoding="utf-8") as f:
        f.write(MAKEFILE.format(command=COMMAND))
    return {
        "mtcmpi_cmd": lambda: mtcmpi(cores + 1, [*files, "--schedule", "dynamic"]),
        "static": lambda: mtcmpi(cores, [*files, "--schedule", "static"]),
        "parallel": lambda: shell_tool(["parallel", "--will-cite", "-j", str(cores), COMMAND + " {}"],
                                       work, "\n".join(inputs) + "\n"),
        "make": lambda: shell_tool(["make", "-s", "-j", str(cores)], work),
        "mtcmpi_py": lambda: mtcmpi(cores + 1, ["kernels.touch:touch", "--params", params,
                                                "--schedule", "dynamic"]),
        "rerun": lambda: mtcmpi(cores + 1, [*files, "--skip-existing", "{.}.out",
                                            "--schedule", "dynamic"]),
    }


def outputs(work: str) -> list[str]:
    return glob.glob(os.path.join(work, "data", "*.out"))


def check_rerun(stdout: str, n: int) -> None:
    """The rerun's summary must say that all n tasks were skipped."""
    found = re.search(r"(\d+) skipped", stdout)
    if not found or int(found.group(1)) != n:
        raise RuntimeError(f"the --skip-existing rerun did not skip all {n} tasks:\n{stdout}")


def measure(n: int, cores: int) -> dict[str, float]:
    """Wall seconds of each tool on n fresh inputs in a temporary directory, checked and printed."""
    from kernels.touch import make_inputs

    seconds = {}
    with tempfile.TemporaryDirectory() as work:
        inputs = make_inputs(os.path.join(work, "data"), n)
        for name, launch in launchers(work, inputs, cores).items():
            if name != "rerun":
                for path in outputs(work):
                    os.remove(path)
            seconds[name], stdout = timed(launch)
            if name == "rerun":
                check_rerun(stdout, n)
            elif len(outputs(work)) != n:
                raise RuntimeError(f"{name} made {len(outputs(work))} of {n} outputs")
            print(f"{name:<11} {seconds[name]:>8.2f} {n / seconds[name]:>9,.0f}", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 files instead of 9,999")
    parser.add_argument("--files", type=int, help="number of input files (overrides --quick)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2,
                        help="commands at a time (default: the machine's cores)")
    args = parser.parse_args()
    n = args.files or (2000 if args.quick else 9999)
    print(f"{n:,} files, {args.cores} at a time; command: {COMMAND} {{}}")
    print(f"{'tool':<11} {'seconds':>8} {'files/s':>9}")
    s = measure(n, args.cores)
    print(f"command mode / GNU parallel: {s['mtcmpi_cmd'] / s['parallel']:.2f} (target <= 1); "
          f"GNU parallel / function mode: {s['parallel'] / s['mtcmpi_py']:.0f}x (target >= 50x); "
          f"rerun {s['rerun']:.2f} s (target < 2 s)")
    print(f"RESULT files={n} mtcmpi_cmd_s={s['mtcmpi_cmd']:.2f} parallel_s={s['parallel']:.2f} "
          f"make_s={s['make']:.2f} mtcmpi_py_s={s['mtcmpi_py']:.2f} rerun_s={s['rerun']:.2f}")

if __name__ == "__main__":
    main()
