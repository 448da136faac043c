"""`mtcmpi pipeline FILE.py`: plan on every rank, then rank 0 drives the tasks over an Executor.

Every rank loads the pipeline file and plans it, and builds its options as `run` does
(RunOptions: the same checks and messages), so a bad graph or option is one agreed error,
exit 2 everywhere, and workers run a task from its id alone (task.py: no function travels).
Rank 0 decides what is up to date (journal.py), drives the rest (driver.py) and at the end
writes the per-task record (record.py). Stop signals, --grace, the walltime and the exit
status are `run`'s (faults.Stop on every rank).
"""
from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from ..errors import EXIT_OK, EXIT_STOPPED, EXIT_TASKS_FAILED, UsageError
from .journal import Journal, decide

if TYPE_CHECKING:
    import argparse

    from ..world import World
    from .driver import Driver
    from .stages import Plan

def pipeline_main(args: argparse.Namespace) -> int:
    """Collective: check, plan, then run (or --dry-run) a pipeline file; the exit status."""
    from ..faults import catch_early, ignore_late

    catch_early(args.grace)   # a stop signal during MPI start-up stops the run before its first task
    from ..futures import executor
    from ..options import RunOptions
    from ..world import World
    from .stages import load
    from .task import Runner, serve_with

    world = World.of()
    args.out = args.out or os.path.splitext(os.path.basename(args.pipeline))[0] + ".h5"
    options, problems = None, []
    try:
        options = RunOptions.from_args(args)
    except UsageError as exc:
        problems.append(str(exc))
    plan = load(args.pipeline)
    world.agree("; ".join(problems + plan.problems) or None)
    journal = world.agree_on((lambda: read_journal(args.out + ".journal", options.restart))
                             if world.rank == 0 else None)
    if world.rank == 0:
        state = decide(plan, journal, options.retry_failed)
        if args.dry_run:
            dry_run(args.pipeline, plan, state)
    if args.dry_run:
        return EXIT_OK
    stop = options.stop(world.comm.bcast(options.deadline() if world.rank == 0 else None, root=0))
    stop.expired = lambda why: world.abort(f"mtcmpi: rank {world.rank}: {why}; finished tasks are in "
                                           "the journal: run the same command again to resume", EXIT_STOPPED)
    stop.install()
    serve_with(Runner(plan, options, stop, (world.rank, world.host, world.pid)))
    started, driver = time.time(), None
    try:
        with executor() as ex:
            if ex is not None:
                from .driver import Driver

                driver = Driver(ex, plan, state, journal, options.retries, stop)
                driver.run()
    finally:
        stop.quiet()   # the record is being written: later stop signals change nothing
        serve_with(None)
        stop.uninstall()
    ignore_late()
    code = finish(args.out, plan, state, journal, driver, world, started) if world.rank == 0 else None
    return world.comm.bcast(code, root=0)


def read_journal(path: str, restart: bool) -> Journal:
    """The journal of earlier runs; one that cannot be read is a UsageError (one line, exit 2)."""
    try:
        return Journal(path, restart)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"the journal {path} cannot be read ({exc}): move it away, or pass "
                         "--restart to run every task again") from None


def dry_run(path: str, plan: Plan, state: dict[str, str]) -> None:
    """Print the stages, their task counts, and what is up to date and what would run."""
    words = {"current": "up to date", "run": "would run", "failed": "failed earlier (--retry-failed)",
             "blocked": "not run: input failed"}
    counts = {w: sum(s == k for s in state.values()) for k, w in words.items()}
    print(f"pipeline {path}: {len(plan.stages)} stages, {len(state)} tasks: "
          + ", ".join(f"{n} {w}" for w, n in counts.items() if n))
    for stage in plan.stages:
        mine = [state[t.id] for t in plan.tasks.values() if t.stage is stage]
        after = sorted({w.split(":")[0] for t in plan.tasks.values() if t.stage is stage for w in t.waits})
        what = ", ".join(f"{sum(s == k for s in mine)} {w}" for k, w in words.items() if k in mine)
        print(f"  {stage.name:<16} {stage.kind:<9} {len(mine):>6} tasks: {what}"
              + (f"  (after {', '.join(after)})" if after else ""))


def finish(out: str, plan: Plan, state: dict[str, str], journal: Journal, driver: Driver,
           world: World, started: float) -> int:
    """Rank 0: the record file, a summary, and the exit status (`run`'s: 75 stopped early by a
    signal or the walltime with tasks left, else 1 if any task failed or waits for one)."""
    from .record import write_record

    rows = [row_of(tid, plan, state, journal, driver) for tid in plan.order]
    write_record(out, rows, [s.name for s in plan.stages], world.size, started, " ".join(sys.argv))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(f"mtcmpi pipeline: {len(rows)} tasks in {time.time() - started:.2f} s: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + (f"; stopped early: {driver.reason}" if driver.reason else "") + f"\n  record: {out}", flush=True)
    left = any(state[tid] == "run" and tid not in driver.entries for tid in plan.order)
    if driver.resumable and left:
        return EXIT_STOPPED
    return EXIT_OK if set(counts) <= {"ok", "skipped"} else EXIT_TASKS_FAILED


def row_of(tid: str, plan: Plan, state: dict[str, str], journal: Journal, driver: Driver) -> dict:
    """Task tid's row of the record: how it ended in this run, or earlier, or why it did not run."""
    task = plan.tasks[tid]
    if state[tid] == "current":
        row = {"status": "skipped"}
    elif state[tid] == "failed":
        row = dict(journal.last[tid])
    elif state[tid] == "blocked":
        failed = next(w for w in task.waits if state[w] in ("failed", "blocked"))
        row = {"status": "not-run", "type": "DependencyError", "message": f"not run: input failed: {failed}"}
    else:
        row = dict(driver.entries.get(tid) or {"status": "not-run", "message": f"not run: {driver.reason}"})
    row.update(task=tid, stage=task.stage.name, waits=task.waits)
    return row
