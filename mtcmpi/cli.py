"""The command line: `python -m mtcmpi run ...` (argparse subcommands); main(argv) -> exit code.

MPI is imported only after the arguments parse, so --help is instant, and argparse prints
only on rank 0 (read from the launcher's environment), so a typo does not print 12,288 times.
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from typing import Callable, Sequence

from . import __version__, startup   # startup first: it marks when Python was up
from .startup import launcher_rank
from .errors import EXIT_INTERNAL, EXIT_USAGE, UsageError, exception_line, say
from .run_args import HELP as RUN_HELP, add_run_arguments, add_subcommand

class Parser(argparse.ArgumentParser):
    """argparse that speaks on rank 0 only; every rank still exits alike."""

    declaring = False   # build_parser: arguments are being declared, no text is shown

    def _print_message(self, message, file=None):
        if launcher_rank() == 0:
            super()._print_message(message, file)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every argument it declares, and asking the terminal's
        # width imports shutil (with bz2 and lzma, ~3 ms of CPU on every rank); only help and
        # usage text needs the width
        if Parser.declaring:
            return self.formatter_class(prog=self.prog, width=80)
        return super()._get_formatter()


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line. When argv names a subcommand, only that one is made (and its module
    imported): every rank of a job parses its command line at start-up, and the other
    subcommands' modules and ~40 arguments cost each of 12,288 ranks time for nothing.
    `mtcmpi --help`, --version and a misspelt subcommand get all of them."""
    Parser.declaring = True
    try:
        return declare(argv)
    finally:
        Parser.declaring = False


def declare(argv: Sequence[str]) -> argparse.ArgumentParser:
    """build_parser's parser, made while Parser.declaring."""
    parser = Parser(prog="mtcmpi", description="Many-task computing on MPI: run thousands to "
                    "millions of independent tasks over the ranks of one mpirun.",
                    epilog="examples:\n  mpirun -n 64 python -m mtcmpi run mymodel:simulate "
                    "--params scan.csv\n  python -m mtcmpi run --help",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mtcmpi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    for add in [SUBCOMMANDS[named]] if named else dict.fromkeys(SUBCOMMANDS.values()):
        add(commands)
    return parser


def add_run(commands: argparse._SubParsersAction) -> None:
    """`mtcmpi run`, with the arguments run_args.py declares."""
    add_run_arguments(add_subcommand(commands, "run", command_run, **RUN_HELP))


def add_exec(commands: argparse._SubParsersAction) -> None:
    """`mtcmpi exec SCRIPT`: a driver script and its Executor."""
    exe = add_subcommand(
        commands, "exec", command_exec,
        help="run a driver script on rank 0; the other ranks run the tasks it submits to mtcmpi.Executor",
        description="Run SCRIPT as __main__ on rank 0 with ARGS as its sys.argv[1:]; every other rank "
        "imports it (keep the driver code under `if __name__ == '__main__':`) and serves its "
        "Executor's tasks until it ends.",
        examples="examples:\n  mpirun -n 64 python -m mtcmpi exec driver.py --input scan.csv\n\n"
        "exit status: the driver's own (0, its sys.exit code, or 1 if it raised), on every rank")
    exe.add_argument("script", help="the driver script")
    exe.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")


def add_reduce(commands: argparse._SubParsersAction) -> None:
    """`mtcmpi reduce FILE [KEY]`."""
    reduce = add_subcommand(
        commands, "reduce", command_reduce,
        help="sum (mean, min, max) a result over the tasks that succeeded",
        description="Reduce /results/KEY of a results file along the task axis over the tasks that "
        "succeeded (rows without a value are left out), a block of rows at a time.",
        examples="examples:\n  python -m mtcmpi reduce lw.h5 --save grid.npy\n"
        "  python -m mtcmpi reduce results.h5 energy --op mean")
    reduce.add_argument("file", help="a results file written with --out")
    reduce.add_argument("key", nargs="?", default="value", help="reduce results/KEY (default: value, "
                        "where a plain return value is stored)")
    reduce.add_argument("--op", default="sum", metavar="OP", help="sum (default), mean, min or max")
    reduce.add_argument("--save", metavar="OUT.npy", help="save the result with numpy.save")


def add_plot(commands: argparse._SubParsersAction) -> None:
    """`mtcmpi plot FILE.h5`."""
    plot = add_subcommand(
        commands, "plot", command_plot,
        help="draw a Gantt chart and busy ranks over time from a results file (needs mtcmpi[plot]); "
        "no mpirun needed",
        description="With neither --gantt nor --utilization, both are written next to the file as "
        "<stem>-gantt.png and <stem>-utilization.png.",
        examples="example:\n  python -m mtcmpi plot results.h5 --gantt gantt.png --utilization util.png")
    plot.add_argument("results", metavar="FILE.h5", help="a results file written by run --out")
    plot.add_argument("--gantt", metavar="PNG", help="one row per rank, one bar per task, failures in colour")
    plot.add_argument("--utilization", metavar="PNG", help="busy ranks over time, with the efficiency")


def add_report(commands: argparse._SubParsersAction) -> None:
    """`mtcmpi report FILE`."""
    report = add_subcommand(
        commands, "report", command_report,
        help="summarise a results file",
        description="Summarise a results file: tasks by status, failures by type, wall and task time, "
        "efficiency, busy fraction per rank, the slowest tasks.",
        examples="example:\n  python -m mtcmpi report results.h5 --json")
    report.add_argument("file", help="a results file written with --out")
    report.add_argument("--json", action="store_true", help="print the same numbers as JSON")


def elsewhere(module: str, function: str) -> Callable[[argparse._SubParsersAction], None]:
    """A subcommand that module's function adds, imported only when that subcommand is made."""
    return lambda commands: getattr(import_module(module, __package__), function)(commands)


add_pool = elsewhere(".pool.commands", "add_commands")   # both `serve` and `hub`
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    # name: what adds it, in the order `mtcmpi --help` lists them
    "run": add_run, "exec": add_exec, "reduce": add_reduce, "plot": add_plot, "report": add_report,
    "jobscript": elsewhere(".jobscript", "add_command"), "serve": add_pool, "hub": add_pool,
    "pipeline": elsewhere(".pipeline.command", "add_command"),
}


def command_exec(args: argparse.Namespace) -> int:
    startup.init_mpi()   # as `run` starts: its share of the cores, MPI_Init's waits coarse
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


def command_run(args: argparse.Namespace) -> int:
    from .faults import catch_early, ignore_late

    catch_early(args.grace)   # before MPI starts, which can take seconds on thousands of ranks
    comm = startup.init_mpi()
    if startup.broadcast_wanted(args.import_broadcast):
        startup.share_imports(comm, ["mtcmpi.job", "mtcmpi.options", "mtcmpi.policies", "mtcmpi.progress"]
                              + (["mtcmpi.costs"] if args.cost or args.costs_from else [])
                              + (["mtcmpi.output.results_file", "numpy", "h5py"]
                                 if args.out else []), args.target)   # used later: from memory too
    from .job import run_job
    from .options import RunOptions
    from .world import World

    world = World.of()
    error = options = target = source = None
    try:   # agreed in run_job, since some checks (creating --output-dir) can fail on one node only
        options = RunOptions.from_args(args)
        target, source = task_list(args)
    except UsageError as exc:
        error = str(exc)
    outcome = run_job(world, target, source, options, error)
    ignore_late()   # everything is stored: a late warning must not kill a rank in MPI_Finalize
    if outcome.summary is not None:
        print("\n".join(outcome.summary.lines()), flush=True)
        if options.profile_startup:
            print("\n".join(startup.table(outcome.summary.startup_phases, outcome.summary.ranks)), flush=True)
    return outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    """Parse, run the subcommand, and turn errors into one message and an exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        if launcher_rank() == 0:
            say(f"mtcmpi: error: {exc}")
        return EXIT_USAGE
    except BrokenPipeError:   # `mtcmpi report f.h5 | head`: the reader left, as for any filter
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        import traceback   # only here: one module fewer for every rank to read at start-up

        from .world import World
        world = World.of()
        detail = traceback.format_exc() if world.rank == 0 else f"{exception_line(exc)}\n"
        world.abort(f"mtcmpi: internal error on rank {world.rank} ({world.host}), aborting the "
                    f"job: {detail}", EXIT_INTERNAL)
        return EXIT_INTERNAL
