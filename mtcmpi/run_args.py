"""The arguments of `mtcmpi run`, apart from the command line that offers them.

cli.py registers them as the `run` subcommand; jobscript.py parses a job's run arguments with
them, so a typo fails when the script is written, not in the queue. Each argument is one field
of options.RunOptions (or of the task list: target, --count, --params, the command tasks).
"""
from __future__ import annotations

import argparse
import contextlib
import io
from typing import Callable

from .errors import UsageError

RUN_EXAMPLES = """\
examples:
  mpirun -n 64 python -m mtcmpi run mymodel:simulate --params scan.csv --schedule dynamic
  mpirun -n 64 python -m mtcmpi run kernels.sleep:task --count 640 --schedule static
  mpirun -n 8  python -m mtcmpi run mymodel:simulate --params scan.jsonl --chunk 10
  mpirun -n 8  python -m mtcmpi run mymodel:simulate --params scan.csv --schedule guided:4
  mpirun -n 64 python -m mtcmpi run mymodel:simulate --params scan.csv --cost n_steps
  mpirun -n 64 python -m mtcmpi run mymodel:simulate --params scan2.csv --costs-from scan1.h5
  mpirun -n 8  python -m mtcmpi run --command 'python runner.py {}' --files 'data/*.inp'
  mpirun -n 8  python -m mtcmpi run --command 'touch {.}.out' --files 'data/*.inp' --skip-existing '{.}.out'
  mpirun -n 8  python -m mtcmpi run --taskfile tasks.txt --output-dir logs
  mpirun -n 64 python -m mtcmpi run mymodel:solve --params scan.csv --ranks-per-task 4
  mpirun -n 64 python -m mtcmpi run --command '{mpirun} ./sim -i {}' --files 'in/*.inp' --ranks-per-task 8

schedules:
  static         contiguous blocks of tasks, one per rank (rank 0 works too); no messages
  static:cyclic  task i on rank i mod ranks; no messages
  dynamic        rank 0 hands out chunks on request (self-scheduling); the default
  guided[:K]     dynamic with chunks of remaining/(K x workers), K=2 by default
  with --cost or --costs-from: dynamic and guided hand out the longest tasks first; static
  gives every rank the same total cost (longest first into the least-loaded rank, LPT)

exit status: 0 all tasks ok, 1 some tasks failed, 2 bad input, 3 internal error (job aborted),
  75 stopped early by a signal or the walltime: run the same command again to resume
"""

HELP = dict(help="run a function once per task over all ranks",
            description="Run TARGET once per task. A task is a call of TARGET with one argument "
            "list; rank 0 checks the input and prints a summary at the end.",
            examples=RUN_EXAMPLES)


def add_subcommand(commands: argparse._SubParsersAction, name: str, handler: Callable[[argparse.Namespace], int],
                   *, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """Register `mtcmpi NAME` on the CLI's subparsers, run by handler(args): help is its line in
    `mtcmpi --help`; its own --help opens with description and ends with examples (and exit
    statuses) as written. Every subcommand is made here, so each shows examples alike."""
    parser = commands.add_parser(name, help=help, description=description, epilog=examples,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler)
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Every argument of `mtcmpi run` on `parser`."""
    parser.add_argument("target", nargs="?", help="the task function, as package.module:function")
    source = parser.add_argument_group("task arguments for a function target (one of)")
    source.add_argument("--count", type=int, metavar="N", help="N tasks; task i is called with i")
    source.add_argument("--params", metavar="FILE", help="one task per row of a .csv (with header), "
                        ".jsonl or .json list; columns become keyword arguments, numbers are parsed")
    shell = parser.add_argument_group("command tasks (instead of a target)")
    shell.add_argument("--command", metavar="TEMPLATE", help="shell command per task: {} value, "
                       "{.} without extension, {/} basename, {/.} basename without extension, "
                       "{#} task number (id+1); values are shell-quoted; no placeholder: ' {}' "
                       "is appended")
    shell.add_argument("--files", nargs="+", metavar="PATTERN", help="one task per file; quote "
                       "globs ('data/*.inp'); matches are sorted, so task ids are stable")
    shell.add_argument("--args", dest="args_file", metavar="FILE",
                       help="one task per non-blank line of FILE; the line is {}")
    shell.add_argument("--taskfile", metavar="FILE", help="one shell command per line; blank "
                       "lines and # comments are skipped; ids count the command lines")
    shell.add_argument("--skip-existing", metavar="TEMPLATE", help="skip a task whose output "
                       "(e.g. '{.}.out') exists and is not older than its input (make-like); "
                       "with --args/--taskfile, skip if it exists")
    shell.add_argument("--output-dir", metavar="DIR", help="keep each command's whole stdout and "
                       "stderr as DIR/<id>.out and DIR/<id>.err (the task log keeps the last lines)")
    parser.add_argument("--schedule", default="dynamic", metavar="POLICY",
                     help="static, static:cyclic, dynamic (default) or guided[:K]")
    parser.add_argument("--chunk", type=int, metavar="K", help="tasks per message for dynamic/guided "
                     "(default: automatic, from measured task time; guided: the smallest chunk)")
    parser.add_argument("--prefetch", default="auto", metavar="P", help="chunks a worker asks for "
                     "ahead of the one it runs, hiding the round trip (0 to disable); default "
                     "auto: one ahead while chunks run shorter than 10 ms or more than 2 x "
                     "workers tasks remain")
    cost = parser.add_argument_group("task costs: longest first (dynamic, guided) or equal-cost "
                                  "shares (static)")
    cost.add_argument("--cost", metavar="COLUMN|MODULE:FUNCTION", help="each task's expected run "
                      "time (any unit): a numeric column of --params, or a function called with "
                      "the task's arguments that returns a number")
    cost.add_argument("--costs-from", metavar="FILE.h5", help="the durations measured by an "
                      "earlier run's --out file, matched by task id (same task list) or by arguments")
    parallel = parser.add_argument_group("parallel tasks: a task on k ranks (see README, Parallel tasks)")
    parallel.add_argument("--ranks-per-task", type=int, metavar="K", help="every task runs on K "
                          "ranks: a function with a `comm` parameter is called on all K with an "
                          "mpi4py communicator of them; a command's {mpirun} starts K processes")
    parallel.add_argument("--ranks", metavar="COLUMN|MODULE:FUNCTION", help="each task's number "
                          "of ranks: an integer column of --params, or a function of the task's "
                          "arguments")
    parallel.add_argument("--packing", default="backfill", metavar="RULE", help="backfill "
                          "(default: larger tasks first, smaller ones fill gaps until the largest "
                          "waiting task has waited one mean task time), greedy or strict")
    store = parser.add_argument_group("results file")
    store.add_argument("--out", metavar="FILE.h5", help="write results and the per-task log to one "
                       "HDF5 file (parallel HDF5, built by one rank per node); run the same command again "
                       "to resume: tasks already done are skipped")
    add_resume_arguments(store)
    store.add_argument("--serial-io", action="store_true", help="rank 0 writes the whole file "
                       "(for an h5py without MPI; results then travel to rank 0)")
    store.add_argument("--pickle-results", action="store_true", help="store return values that are "
                       "not numbers, arrays or strings as pickles (read back with mtcmpi.load_pickled)")
    store.add_argument("--flush-interval", type=float, default=2.0, metavar="S", help="seconds "
                       "between journal flushes: a kill loses at most the tasks finished in the "
                       "last S seconds (default 2)")
    store.add_argument("--compression", metavar="gzip[:LEVEL]|lzf", help="compress the result "
                       "datasets (chunked; written collectively; see the README for what it costs)")
    store.add_argument("--chunk-rows", type=int, metavar="N", help="chunk the result datasets by N "
                       "rows (default: contiguous, or about 1 MiB of rows when compressed)")
    add_stop_arguments(parser)
    shown = parser.add_argument_group("progress (rank 0, on stderr)")
    shown.add_argument("--quiet", action="store_true", help="no progress display (the summary "
                       "is still printed)")
    shown.add_argument("--progress-interval", type=float, default=30.0, metavar="S", help="in a "
                       "batch log (stderr not a terminal): one status line every S seconds "
                       "(default 30); on a terminal a live bar instead")
    shown.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error: what "
                       "rank 0 logs on stderr (debug traces every dispatch; default: warnings)")
    begin = parser.add_argument_group("start-up")
    begin.add_argument("--profile-startup", action="store_true", help="print where start-up went "
                       "(Python, imports, MPI init, checks, results file, first task; median and max "
                       "over ranks); the results file keeps it as startup_* attributes either way")
    begin.add_argument("--import-broadcast", action="store_true", help="rank 0 reads the run's "
                       "pure-Python modules (mtcmpi's, the task module, numpy's...) and broadcasts "
                       "them; the other ranks import from memory, sparing a shared filesystem "
                       "(for big jobs; also MTCMPI_IMPORT_BROADCAST=1)")


def add_resume_arguments(group: argparse._ArgumentGroup) -> None:
    """--restart and --retry-failed: how a rerun treats what an earlier run of its output did
    (`run` and `pipeline` alike; RunOptions checks them)."""
    group.add_argument("--restart", action="store_true", help="with --out: discard what an "
                       "earlier run of this output did and start over")
    group.add_argument("--retry-failed", action="store_true", help="with --out: run again the "
                       "tasks that failed in an earlier run")


def add_stop_arguments(parser: argparse.ArgumentParser) -> None:
    """The "stopping early" group: --walltime, --grace, --max-failures, --fail-fast, --timeout,
    --isolate, --retries (`run` and `pipeline` alike; RunOptions checks them)."""
    faults = parser.add_argument_group("stopping early (a stopped run resumes when run again)")
    faults.add_argument("--walltime", metavar="HH:MM:SS", help="start no task that would not finish "
                        "before this much time from now, less --grace (default: the job's end time "
                        "when the batch system tells it, as Slurm does)")
    faults.add_argument("--grace", type=float, default=20.0, metavar="S", help="after SIGTERM, "
                        "SIGUSR1 or SIGINT, let running tasks finish for S seconds, then end the job "
                        "(a second Ctrl-C ends it at once); default 20")
    faults.add_argument("--max-failures", type=int, metavar="N", help="stop handing out work after "
                        "N failed tasks; the run stores everything and exits 1")
    faults.add_argument("--fail-fast", action="store_true", help="the same as --max-failures 1")
    faults.add_argument("--timeout", type=float, metavar="S", help="kill a task still running after "
                        "S seconds (status timeout); function tasks then run in a child process "
                        "of their rank, as with --isolate")
    faults.add_argument("--isolate", action="store_true", help="run function tasks in a child "
                        "process of each rank, so a task that segfaults or is killed (say by the "
                        "OOM killer) fails alone (status crashed); about 25 us more per task")
    faults.add_argument("--retries", type=int, default=0, metavar="K", help="try a failed task again "
                        "up to K times, on another rank where possible (static: on the same rank); "
                        "the file's attempts field counts the tries")


def parse_run(run_args: list[str]) -> argparse.Namespace:
    """run_args as `mtcmpi run` parses them; argparse's complaint becomes a UsageError."""
    parser = argparse.ArgumentParser(prog="mtcmpi run")
    add_run_arguments(parser)
    return parse_quietly(parser, run_args, "run")


def parse_quietly(parser: argparse.ArgumentParser, argv: list[str], command: str) -> argparse.Namespace:
    """argv parsed by parser without printing; argparse's complaint becomes a UsageError naming
    the arguments of `command` (the ones a job script gets after --)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines() or [f"--help is not a {command} argument"]
        raise UsageError(f"{command} arguments after --: {lines[-1].split('error: ')[-1]}") from None
