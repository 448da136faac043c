"""Fault trials: kill or stop a job at random moments, resume, lose nothing, repeat nothing.

    python scaling/faults.py [--trials 20] [--tasks 200] [--ranks 4]

Each trial starts `mpiexec -n R python -m mtcmpi run fault_task:work --count N --out F` and,
at a random moment (start-up, mid-run or while the file is written), does one of:
  kill    SIGKILL to every process of the job (a walltime kill, a node lost)
  rank    SIGKILL to one rank only (MPI then ends the job)
  term    SIGTERM to every process (what a batch system sends first): mtcmpi stops handing
          out work, finishes running tasks and stores everything
It then reads the journal left behind (which tasks each rank had flushed, and when it last
flushed), runs the same command again to completion, and checks: every task is in the file
exactly once with status ok and the right value (lost=0), and no task that finished before its
rank's last journal flush, or that a stopped run stored, ran a second time (doubled=0).
Trials cycle through the three kinds. Last line:
RESULT trials=<n> complete=<n> lost=<n> doubled=<n>
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _mpirun import command as mpiexec, environment, kill_session  # noqa: E402

from mtcmpi.output import journal  # noqa: E402


def command(ranks: int, n: int, out: str) -> list[str]:
    return mpiexec(ranks, ["-m", "mtcmpi", "run", "fault_task:work", "--count", str(n), "--out", out,
                           "--flush-interval", "0.2"])


def finishes(log: str) -> dict[int, list[tuple[int, float]]]:
    """task id -> [(pid, finish time)] of every time it ran."""
    ran: dict[int, list[tuple[int, float]]] = defaultdict(list)
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                ran[int(parts[0])].append((int(parts[1]), float(parts[2])))
    return ran


def ranks_of(sid: int) -> list[int]:
    """The pids of the ranks (python processes) of a job's session."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)
            if int(fields[1].split()[3]) == sid and "python" in fields[0]:
                pids.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def trial(ranks: int, n: int, kill_after: float, workdir: str, kind: str = "kill") -> dict:
    """One fault-and-resume trial (kind: kill, rank or term); returns its counts."""
    out, log = os.path.join(workdir, "r.h5"), os.path.join(workdir, "finished.log")
    env = environment({"MTCMPI_FAULTS_LOG": log, "PYTHONPATH": HERE})
    open(log, "w").close()
    job = subprocess.Popen(command(ranks, n, out), env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    killed = job.poll() is None
    if killed and kind == "rank":
        victims = ranks_of(job.pid)
        if victims:
            os.kill(max(victims), signal.SIGKILL)
    elif killed:
        kill_session(job.pid, signal.SIGTERM if kind == "term" else signal.SIGKILL)
    try:
        job.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill_session(job.pid, signal.SIGKILL)
        raise RuntimeError(f"the job did not end within 60 s of the {kind} fault")
    time.sleep(0.2)   # let the kernel reap the ranks before the journal is read
    last_flush: dict[int, float] = {}
    for frame in journal.read(out):
        last_flush[frame.meta["pid"]] = max(last_flush.get(frame.meta["pid"], 0.0), frame.meta["flushed"])
    if os.path.exists(out):   # a stopped run stored what it finished: none of it may run again
        with h5py.File(out) as f:
            for pid, end in f["tasks"][:][["pid", "end"]]:
                last_flush[int(pid)] = max(last_flush.get(int(pid), 0.0), float(end) + 1e-6)
    before = finishes(log)
    again = subprocess.run(command(ranks, n, out), env=env, capture_output=True, text=True, timeout=300)
    if again.returncode != 0:
        raise RuntimeError(f"the resumed run failed:\n{again.stdout}\n{again.stderr}")
    with h5py.File(out) as f:
        status, values = f["tasks"]["status"][:], f["results/value"][:]
    lost = int(np.sum((status != 1) | (values != 2 * np.arange(n))))
    doubled = 0
    for tid, runs in finishes(log).items():
        first = before.get(tid, [])
        if len(runs) > 1 and any(t < last_flush.get(pid, 0.0) for pid, t in first):
            doubled += 1
    return {"killed": killed, "kind": kind, "lost": lost, "doubled": doubled, "before": len(before),
            "rerun": sum(len(r) > 1 for r in finishes(log).values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    total = {"complete": 0, "lost": 0, "doubled": 0}
    for i in range(args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            when, kind = rng.uniform(0.5, 4.0), ("kill", "rank", "term")[i % 3]
            r = trial(args.ranks, args.tasks, when, tmp, kind)
        total["complete"] += r["lost"] == 0
        total["lost"] += r["lost"]
        total["doubled"] += r["doubled"]
        what = {"kill": "SIGKILL to the job", "rank": "SIGKILL to one rank", "term": "SIGTERM to the job"}[kind]
        print(f"trial {i + 1:2d}: {what} at {when:4.2f} s ({'hit' if r['killed'] else 'had finished'}): "
              f"{r['before']} finished before the kill, {r['rerun']} ran again (unflushed), "
              f"lost {r['lost']}, doubled {r['doubled']}", flush=True)
    print(f"RESULT trials={args.trials} complete={total['complete']} lost={total['lost']} doubled={total['doubled']}")


if __name__ == "__main__":
    main()
