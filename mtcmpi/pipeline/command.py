"""The `pipeline` subcommand (argparse only: the driver, MPI and the graph are imported when it
runs, so other commands' ranks do not load them)."""
from __future__ import annotations

import argparse

from ..run_args import add_resume_arguments, add_stop_arguments, add_subcommand


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `mtcmpi pipeline` with the CLI's subcommands."""
    p = add_subcommand(
        commands, "pipeline", run_pipeline,
        help="run a pipeline of stages over files (ruffus-style) in one MPI job",
        description="Run the stages a pipeline file declares (mtcmpi.pipeline.transform, split, "
        "merge): rank 0 drives, a task starts as soon as its inputs exist, a task whose outputs "
        "are up to date is skipped (make-like), and a killed run resumes when run again.",
        examples="examples:\n  mpirun -n 32 python -m mtcmpi pipeline examples/lw_pipeline.py --out lw.h5\n"
        "  python -m mtcmpi pipeline examples/lw_pipeline.py --dry-run\n\nexit status: 0 all tasks ok "
        "or up to date, 1 some failed (or --max-failures),\n  2 a bad pipeline or option, 75 stopped "
        "early by a signal or the walltime: run the same\n  command again to resume")
    p.add_argument("pipeline", metavar="FILE.py", help="the pipeline file")
    p.add_argument("--out", metavar="FILE.h5", help="the per-task record (default: FILE.h5 here, FILE "
                   "the pipeline's name); the journal of finished tasks is FILE.h5.journal")
    p.add_argument("--dry-run", action="store_true", help="print the stages, task counts, and what is "
                   "up to date or would run; run nothing")
    add_resume_arguments(p)
    add_stop_arguments(p)   # the same declarations and checks (RunOptions) as `run`'s


def run_pipeline(args: argparse.Namespace) -> int:
    """`mtcmpi pipeline`: the driver and what it needs are imported only now."""
    from .run import pipeline_main

    return pipeline_main(args)
