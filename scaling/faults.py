"""Fault trials: kill or stop a job at random moments, resume, lose nothing, repeat nothing.

    python scaling/faults.py [--trials 20] [--tasks 200] [--ranks 4] [--kinds kill,rank,term,ctrl-c,disk]

Each trial starts `mpiexec -n R python -m mtcmpi run fault_task:work --count N --out F` and,
at a random moment (start-up, mid-run or while the file is written), does one of:
  kill    SIGKILL to every process of the job (a walltime kill, a node lost)
  rank    SIGKILL to one rank only (MPI then ends the job)
  term    SIGTERM to every process (what a batch system sends first): mtcmpi stops handing
          out work, finishes running tasks and stores everything
  ctrl-c  SIGINT to mpiexec alone, as Ctrl-C at a terminal or `kill` of mpiexec: Open MPI
          sends the ranks SIGTERM and SIGKILL 1 s apart (odls_base_sigkill_timeout, here its
          default, 1)
  disk    --out on a small tmpfs (root only) that a filler file leaves a few KB of room: the
          journal's disk fills up during the run; the room is freed before the resume
It then reads the journal left behind (which tasks each rank had flushed, and when it last
flushed), runs the same command again to completion, and checks: every task is in the file
exactly once with status ok and the right value (lost=0), and no task that finished before its
rank's last journal flush, or that a stopped run stored, ran a second time (doubled=0); for
disk, none that finished a flush window (FLUSH + a task) or more before its rank's last task
(a rank must not go on running tasks it cannot journal). A first run that does not end within
60 s is killed and counted as hung. Trials cycle through the kinds. Last line:
RESULT trials=<n> complete=<n> lost=<n> doubled=<n> hung=<n>
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
from _mpirun import command as mpiexec, end_job, environment, ranks_of, signal_job  # noqa: E402

from mtcmpi.output import journal  # noqa: E402


FLUSH = 0.2            # --flush-interval of the trials
WINDOW = FLUSH + 0.1   # a flush window and a task (fault_task's take up to 40 ms)
KINDS = ("kill", "rank", "term", "ctrl-c", "disk")


def command(ranks: int, n: int, out: str) -> list[str]:
    return mpiexec(ranks, ["-m", "mtcmpi", "run", "fault_task:work", "--count", str(n), "--out", out,
                           "--flush-interval", str(FLUSH)])


class SmallDisk:
    """A tmpfs of `size` bytes at `path`, filled up but for `room` bytes until free() (root)."""

    def __init__(self, path: str, room: int, size: int = 8 << 20):
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], check=True)
        self.path, self.filler = path, os.path.join(path, "filler")
        free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
        with open(self.filler, "wb") as f:
            f.write(b"\0" * max(0, free - room))

    def free(self) -> None:
        if os.path.exists(self.filler):
            os.remove(self.filler)

    def close(self) -> None:
        subprocess.run(["umount", "-l", self.path], check=False)


def finishes(log: str) -> dict[int, list[tuple[int, float]]]:
    """task id -> [(pid, finish time)] of every time it ran."""
    ran: dict[int, list[tuple[int, float]]] = defaultdict(list)
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                ran[int(parts[0])].append((int(parts[1]), float(parts[2])))
    return ran


def trial(ranks: int, n: int, kill_after: float, workdir: str, kind: str = "kill",
          rng: random.Random | None = None) -> dict:
    """One fault-and-resume trial (kind: one of KINDS); returns its counts."""
    disk = SmallDisk(os.path.join(workdir, "disk"), (rng or random).randrange(4, 16) << 10) \
        if kind == "disk" else None
    try:
        return run_trial(ranks, n, kill_after, workdir, kind, disk)
    finally:
        if disk:
            disk.close()


def run_trial(ranks: int, n: int, kill_after: float, workdir: str, kind: str,
              disk: SmallDisk | None) -> dict:
    out = os.path.join(disk.path if disk else workdir, "r.h5")
    log = os.path.join(workdir, "finished.log")
    env = environment({"MTCMPI_FAULTS_LOG": log, "PYTHONPATH": HERE,
                       "OMPI_MCA_odls_base_sigkill_timeout": "1"})
    open(log, "w").close()
    job = subprocess.Popen(command(ranks, n, out), env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed, hung = False, False
    if kind != "disk":
        time.sleep(kill_after)
        killed = job.poll() is None
    if killed and kind == "rank":
        victims = ranks_of(job.pid)
        if victims:
            os.kill(max(victims), signal.SIGKILL)
    elif killed and kind == "ctrl-c":
        job.send_signal(signal.SIGINT)
    elif killed:
        signal_job(job.pid, signal.SIGTERM if kind == "term" else signal.SIGKILL)
    try:
        job.wait(timeout=60)
    except subprocess.TimeoutExpired:
        hung = True
        end_job(job.pid)
        job.wait(timeout=30)
    time.sleep(0.2)   # let the kernel reap the ranks before the journal is read
    last_flush: dict[int, float] = {}
    for frame in journal.read(out):
        last_flush[frame.meta["pid"]] = max(last_flush.get(frame.meta["pid"], 0.0), frame.meta["flushed"])
    if os.path.exists(out):   # a stopped run stored what it finished: none of it may run again
        with h5py.File(out) as f:
            for pid, end in f["tasks"][:][["pid", "end"]]:
                last_flush[int(pid)] = max(last_flush.get(int(pid), 0.0), float(end) + 1e-6)
    before = finishes(log)
    if disk:   # a rank may only run on a flush window past its last journalled task
        last_task: dict[int, float] = {}
        for runs in before.values():
            for pid, t in runs:
                last_task[pid] = max(last_task.get(pid, 0.0), t)
        last_flush = {pid: max(last_flush.get(pid, 0.0), t - WINDOW) for pid, t in last_task.items()}
        disk.free()
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
    return {"killed": killed or kind == "disk", "kind": kind, "lost": lost, "doubled": doubled,
            "hung": hung, "before": len(before),
            "rerun": sum(len(r) > 1 for r in finishes(log).values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(KINDS), help="which faults, in turn")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if set(kinds) - set(KINDS) or ("disk" in kinds and os.geteuid() != 0):
        parser.error(f"--kinds: some of {', '.join(KINDS)} (disk needs root, to mount a tmpfs)")
    rng = random.Random(args.seed)
    total = {"complete": 0, "lost": 0, "doubled": 0, "hung": 0}
    what = {"kill": "SIGKILL to the job", "rank": "SIGKILL to one rank", "term": "SIGTERM to the job",
            "ctrl-c": "SIGINT to mpiexec", "disk": "journal's disk full"}
    for i in range(args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            when, kind = rng.uniform(0.5, 4.0), kinds[i % len(kinds)]
            r = trial(args.ranks, args.tasks, when, tmp, kind, rng)
        total["complete"] += r["lost"] == 0
        total["lost"] += r["lost"]
        total["doubled"] += r["doubled"]
        total["hung"] += r["hung"]
        moment = "" if kind == "disk" else f" at {when:4.2f} s ({'hit' if r['killed'] else 'had finished'})"
        print(f"trial {i + 1:2d}: {what[kind]}{moment}{', HUNG' if r['hung'] else ''}: "
              f"{r['before']} finished before, {r['rerun']} ran again, "
              f"lost {r['lost']}, doubled {r['doubled']}", flush=True)
    print(f"RESULT trials={args.trials} complete={total['complete']} lost={total['lost']} "
          f"doubled={total['doubled']} hung={total['hung']}")


if __name__ == "__main__":
    main()
