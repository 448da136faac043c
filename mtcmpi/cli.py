"""The command line: `python -m mtcmpi run ...` (argparse subcommands); main(argv) -> exit code.

MPI is imported only after the arguments parse, so --help is instant, and argparse prints
only on rank 0 (read from the launcher's environment), so a typo does not print 12,288 times.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__, startup   # startup first: it marks when Python was up
from .errors import EXIT_INTERNAL, EXIT_USAGE, UsageError
from .jobscript import add_command as add_jobscript

RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """This process's rank as the launcher announced it (0 when started without one)."""
    return next((int(os.environ[v]) for v in RANK_VARIABLES if v in os.environ), 0)


class Parser(argparse.ArgumentParser):
    """argparse that speaks on rank 0 only; every rank still exits alike."""

    def _print_message(self, message, file=None):
        if launcher_rank() == 0:
            super()._print_message(message, file)


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mtcmpi", description="Many-task computing on MPI: run thousands to "
                    "millions of independent tasks over the ranks of one mpirun.",
                    epilog="examples:\n  mpirun -n 64 python -m mtcmpi run mymodel:simulate "
                    "--params scan.csv\n  python -m mtcmpi run --help",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mtcmpi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run a function once per task over all ranks",
                              description="Run TARGET once per task. A task is a call of "
                              "TARGET with one argument list; rank 0 checks the input and "
                              "prints a summary at the end.",
                              epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("target", nargs="?", help="the task function, as package.module:function")
    source = run.add_argument_group("task arguments for a function target (one of)")
    source.add_argument("--count", type=int, metavar="N", help="N tasks; task i is called with i")
    source.add_argument("--params", metavar="FILE", help="one task per row of a .csv (with header), "
                        ".jsonl or .json list; columns become keyword arguments, numbers are parsed")
    shell = run.add_argument_group("command tasks (instead of a target)")
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
    run.add_argument("--schedule", default="dynamic", metavar="POLICY",
                     help="static, static:cyclic, dynamic (default) or guided[:K]")
    run.add_argument("--chunk", type=int, metavar="K", help="tasks per message for dynamic/guided "
                     "(default: automatic, from measured task time; guided: the smallest chunk)")
    run.add_argument("--prefetch", default="auto", metavar="P", help="chunks a worker asks for "
                     "ahead of the one it runs, hiding the round trip (0 to disable); default "
                     "auto: one ahead while chunks run shorter than 10 ms")
    cost = run.add_argument_group("task costs: longest first (dynamic, guided) or equal-cost "
                                  "shares (static)")
    cost.add_argument("--cost", metavar="COLUMN|MODULE:FUNCTION", help="each task's expected run "
                      "time (any unit): a numeric column of --params, or a function called with "
                      "the task's arguments that returns a number")
    cost.add_argument("--costs-from", metavar="FILE.h5", help="the durations measured by an "
                      "earlier run's --out file, matched by task id (same task list) or by arguments")
    store = run.add_argument_group("results file")
    store.add_argument("--out", metavar="FILE.h5", help="write results and the per-task log to one "
                       "HDF5 file (parallel HDF5, written by all ranks); run the same command again "
                       "to resume: tasks already done are skipped")
    store.add_argument("--restart", action="store_true", help="with --out: discard what an "
                       "earlier run of this output did and start over")
    store.add_argument("--retry-failed", action="store_true", help="with --out: run again the "
                       "tasks that failed in an earlier run")
    store.add_argument("--serial-io", action="store_true", help="rank 0 writes the whole file "
                       "(for an h5py without MPI; results then travel to rank 0)")
    store.add_argument("--pickle-results", action="store_true", help="store return values that are "
                       "not numbers, arrays or strings as pickles (read back with mtcmpi.load_pickled)")
    store.add_argument("--flush-interval", type=float, default=2.0, metavar="S", help="seconds "
                       "between journal flushes: a kill loses at most the tasks finished in the "
                       "last S seconds (default 2)")
    faults = run.add_argument_group("stopping early (a stopped run resumes when run again)")
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
    shown = run.add_argument_group("progress (rank 0, on stderr)")
    shown.add_argument("--quiet", action="store_true", help="no progress display (the summary "
                       "is still printed)")
    shown.add_argument("--progress-interval", type=float, default=30.0, metavar="S", help="in a "
                       "batch log (stderr not a terminal): one status line every S seconds "
                       "(default 30); on a terminal a live bar instead")
    begin = run.add_argument_group("start-up")
    begin.add_argument("--profile-startup", action="store_true", help="print where start-up went "
                       "(Python, imports, MPI init, checks, results file, first task; median and max "
                       "over ranks); the results file keeps it as startup_* attributes either way")
    begin.add_argument("--import-broadcast", action="store_true", help="rank 0 reads the run's "
                       "pure-Python modules (mtcmpi's, the task module, numpy's...) and broadcasts "
                       "them; the other ranks import from memory, sparing a shared filesystem "
                       "(for big jobs; also MTCMPI_IMPORT_BROADCAST=1)")
    run.set_defaults(handler=command_run)

    exe = commands.add_parser("exec", help="run a driver script on rank 0; the other ranks run the "
                              "tasks it submits to mtcmpi.Executor",
                              description="Run SCRIPT as __main__ on rank 0 with ARGS as its "
                              "sys.argv[1:]; every other rank imports it (keep the driver code "
                              "under `if __name__ == '__main__':`) and serves its Executor's tasks "
                              "until it ends.",
                              epilog="examples:\n  mpirun -n 64 python -m mtcmpi exec driver.py "
                              "--input scan.csv\n\nexit status: the driver's own (0, its sys.exit "
                              "code, or 1 if it raised), on every rank",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    exe.add_argument("script", help="the driver script")
    exe.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    exe.set_defaults(handler=command_exec)

    reduce = commands.add_parser("reduce", help="sum (mean, min, max) a result over the tasks that "
                                 "succeeded", description="Reduce /results/KEY of a results file along "
                                 "the task axis over the tasks that succeeded (rows without a value are "
                                 "left out), a block of rows at a time.",
                                 epilog="examples:\n  python -m mtcmpi reduce lw.h5 --save grid.npy\n"
                                 "  python -m mtcmpi reduce results.h5 energy --op mean",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    reduce.add_argument("file", help="a results file written with --out")
    reduce.add_argument("key", nargs="?", default="value", help="reduce results/KEY (default: value, "
                        "where a plain return value is stored)")
    reduce.add_argument("--op", default="sum", metavar="OP", help="sum (default), mean, min or max")
    reduce.add_argument("--save", metavar="OUT.npy", help="save the result with numpy.save")
    reduce.set_defaults(handler=command_reduce)

    plot = commands.add_parser("plot", help="draw a Gantt chart and busy ranks over time from a "
                               "results file (needs mtcmpi[plot]); no mpirun needed",
                               description="With neither --gantt nor --utilization, both are written "
                               "next to the file as <stem>-gantt.png and <stem>-utilization.png.",
                               epilog="example:\n  python -m mtcmpi plot results.h5 --gantt gantt.png "
                               "--utilization util.png",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    plot.add_argument("results", metavar="FILE.h5", help="a results file written by run --out")
    plot.add_argument("--gantt", metavar="PNG", help="one row per rank, one bar per task, failures in colour")
    plot.add_argument("--utilization", metavar="PNG", help="busy ranks over time, with the efficiency")
    plot.set_defaults(handler=command_plot)

    report = commands.add_parser("report", help="summarise a results file",
                                 description="Summarise a results file: tasks by status, failures "
                                 "by type, wall and task time, efficiency, busy fraction per rank, "
                                 "the slowest tasks.",
                                 epilog="example:\n  python -m mtcmpi report results.h5 --json",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("file", help="a results file written with --out")
    report.add_argument("--json", action="store_true", help="print the same numbers as JSON")
    report.set_defaults(handler=command_report)
    add_jobscript(commands)
    return parser


def command_exec(args: argparse.Namespace) -> int:
    from .driver import run_script

    return run_script(args.script, args.args)


def command_reduce(args: argparse.Namespace) -> int:
    from .reduce import reduce_main

    return reduce_main(args.file, args.key, args.op, args.save)


def command_plot(args: argparse.Namespace) -> int:
    from .plots import plot_main

    plot_main(args.results, args.gantt, args.utilization)
    return 0


def command_report(args: argparse.Namespace) -> int:
    import json

    from .report import file_report, format_file_report

    if not os.path.exists(args.file):
        raise UsageError(f"{args.file}: no such results file")
    r = file_report(args.file)
    print(json.dumps(r, indent=2) if args.json else "\n".join(format_file_report(r)))
    return 0


def task_list(args: argparse.Namespace) -> tuple:
    """(target, source) from the run options: a function with --count/--params, or commands."""
    from .tasks import CountSource, ParamsSource

    commands = (args.command, args.files, args.args_file, args.taskfile, args.skip_existing, args.output_dir)
    if args.target is None:
        if all(value is None for value in commands):
            raise UsageError("give a target (package.module:function) with --count or --params, "
                             "or --command with --files/--args, or --taskfile")
        from .commands import command_tasks

        source, runner = command_tasks(*commands, timeout=args.timeout)
        return runner, source
    if any(value is not None for value in commands):
        raise UsageError(f"a target ({args.target}) runs a function: drop the command-task "
                         "options (--command, --files, --args, --taskfile, --skip-existing, --output-dir)")
    if (args.count is None) == (args.params is None):
        raise UsageError("a target needs exactly one of --count N or --params FILE")
    return args.target, CountSource(args.count) if args.count is not None else ParamsSource(args.params)


def results_file(args: argparse.Namespace):
    """The --out options as an Output, or None without --out (and then h5py is not imported)."""
    if args.out is None:
        if args.restart or args.retry_failed or args.serial_io or args.pickle_results:
            raise UsageError("--restart, --retry-failed, --serial-io and --pickle-results go with --out")
        return None
    from .output import Output

    if args.flush_interval <= 0:
        raise UsageError(f"--flush-interval must be > 0, not {args.flush_interval}")
    return Output(args.out, args.restart, args.retry_failed, args.serial_io, args.pickle_results,
                  args.flush_interval)


def check_limits(args: argparse.Namespace) -> None:
    """The stopping options, checked alike on every rank."""
    from .faults import parse_walltime

    if args.walltime is not None:
        parse_walltime(args.walltime)
    if args.grace < 0:
        raise UsageError(f"--grace must be >= 0, not {args.grace}")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout must be > 0, not {args.timeout}")
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, not {args.retries}")
    if args.max_failures is not None and args.max_failures < 1:
        raise UsageError(f"--max-failures must be >= 1, not {args.max_failures}")
    if not args.progress_interval > 0:
        raise UsageError(f"--progress-interval must be > 0, not {args.progress_interval}")


def command_run(args: argparse.Namespace) -> int:
    from .faults import Stop, catch_early, deadline, ignore_late

    catch_early()   # before MPI starts, which can take seconds on thousands of ranks
    comm = startup.init_mpi()
    if startup.broadcast_wanted(args.import_broadcast):
        startup.share_imports(comm, ["mtcmpi.job", "mtcmpi.policies", "mtcmpi.progress"]
                              + (["mtcmpi.costs"] if args.cost or args.costs_from else [])
                              + (["mtcmpi.output", "mtcmpi.results", "mtcmpi.store", "numpy", "h5py"]
                                 if args.out else []), args.target)   # used later: from memory too
    from .job import run_job
    from .policies import parse_schedule
    from .progress import Progress
    from .world import World

    world = World.of()
    error, costs = None, None
    try:   # agreed, since some checks (creating --output-dir) can fail on one node only
        if args.cost or args.costs_from:
            from .costs import CostSpec   # numpy: imported only with costs

            costs = CostSpec(args.cost, args.costs_from)
        policy = parse_schedule(args.schedule, args.chunk, args.prefetch, costs is not None)
        target, source = task_list(args)
        output = results_file(args)
        check_limits(args)
    except UsageError as exc:
        error = str(exc)
    world.agree(error)
    end = world.comm.bcast(deadline(args.walltime, args.grace) if world.rank == 0 else None, root=0)
    stop = Stop(end, 1 if args.fail_fast else args.max_failures, args.grace)
    outcome = run_job(world, target, source, policy, output, stop, args.retries, args.timeout,
                      args.isolate, costs, Progress(args.quiet, args.progress_interval))
    ignore_late()   # everything is stored: a late warning must not kill a rank in MPI_Finalize
    if outcome.summary is not None:
        print("\n".join(outcome.summary.lines()), flush=True)
        if output:
            print(f"  results: {output.path} (written in {outcome.summary.store:.2f} s)", flush=True)
        if args.profile_startup:
            print("\n".join(startup.table(outcome.summary.startup_phases, outcome.summary.ranks)), flush=True)
    return outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    """Parse, run the subcommand, and turn errors into one message and an exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        if launcher_rank() == 0:
            print(f"mtcmpi: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except BrokenPipeError:   # `mtcmpi report f.h5 | head`: the reader left, as for any filter
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        import traceback   # only here: one module fewer for every rank to read at start-up

        from .world import World
        world = World.of()
        detail = traceback.format_exc() if world.rank == 0 else f"{type(exc).__name__}: {exc}\n"
        world.abort(f"mtcmpi: internal error on rank {world.rank} ({world.host}), aborting the "
                    f"job: {detail}", EXIT_INTERNAL)
        return EXIT_INTERNAL
