"""The `serve` and `hub` subcommands (argparse only: zmq and MPI are imported when they run)."""
from __future__ import annotations

import argparse

from ..run_args import add_subcommand, parse_quietly

SERVE_EXAMPLES = """\
examples:
  mpirun -n 128 python -m mtcmpi serve --connection ~/.mtcmpi/pool.json --walltime 04:00:00
  python -m mtcmpi jobscript --scheduler slurm --cores 128 --walltime 04:00:00 -o pool.sbatch \\
      -- serve --connection ~/.mtcmpi/pool.json && sbatch pool.sbatch

exit status: 0 the session ended (or was lost), 2 no session to join (or refused),
  75 left at its walltime or on the batch system's warning (a job script that resubmits on 75
  starts a pool that joins again)
"""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `serve` and `hub` on the CLI's subparsers."""
    add_serve_arguments(add_subcommand(
        commands, "serve", command_serve,
        help="a pool of MPI workers for the session a connection file names (mtcmpi.connect() in "
        "a notebook, or `mtcmpi hub`)",
        description="Wait for FILE to name a live session, join it, and run the tasks it sends on "
        "this job's ranks (rank 0 bridges).",
        examples=SERVE_EXAMPLES))

    hub = add_subcommand(
        commands, "hub", command_hub,
        help="a session that outlives a notebook: pools and mtcmpi.connect() clients join it (no MPI)",
        description="Listen, write FILE, and pass tasks between clients (mtcmpi.connect(FILE)) and "
        "pools (mtcmpi serve) until interrupted.",
        examples="example:\n  python -m mtcmpi hub --connection ~/.mtcmpi/pool.json --ip 127.0.0.1")
    hub.add_argument("--connection", required=True, metavar="FILE", help="the connection file to write")
    hub.add_argument("--ip", help="the interface to listen on (default: the address of this host's "
                     "name; 127.0.0.1 for pools on this machine only)")
    hub.add_argument("--port", type=int, help="the port (default: a free one)")
    hub.add_argument("--max-losses", type=int, default=3, metavar="K", help="a task that was on K "
                     "lost pools fails (default 3)")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Every argument of `mtcmpi serve` on parser (the CLI's, and jobscript's check of a job's)."""
    parser.add_argument("--connection", required=True, metavar="FILE", help="the connection file "
                        "the session wrote")
    parser.add_argument("--walltime", metavar="HH:MM:SS", help="take no task that would not finish "
                        "before this much time from now, less --grace, then leave (default: the job's "
                        "end when the batch system tells it)")
    parser.add_argument("--grace", type=float, default=20.0, metavar="S", help="margin before the "
                        "walltime, and how long running tasks may go on after the batch system's "
                        "warning (SIGUSR1, SIGUSR2, SIGTERM) before the pool leaves without them "
                        "(the session runs them elsewhere); default 20")
    parser.add_argument("--wait", type=float, default=600.0, metavar="S", help="how long to wait for "
                        "a live session to appear in FILE (default 600)")


def check_serve(args: argparse.Namespace) -> None:
    """UsageError for a bad serve value (alike on every rank: no MPI needed)."""
    from ..errors import UsageError
    from ..faults import parse_walltime

    if args.walltime is not None:
        parse_walltime(args.walltime)
    if args.grace < 0 or args.wait < 0:
        raise UsageError("--grace and --wait must be >= 0")


def parse_serve(argv: list[str]) -> argparse.Namespace:
    """argv as `mtcmpi serve` parses and checks them (for a job script); UsageError if wrong."""
    parser = argparse.ArgumentParser(prog="mtcmpi serve")
    add_serve_arguments(parser)
    args = parse_quietly(parser, argv, "serve")
    check_serve(args)
    return args


def command_serve(args: argparse.Namespace) -> int:
    from .. import startup
    from ..faults import deadline
    from .connection import expand
    from . import stopsignals

    check_serve(args)
    stopsignals.catch()   # before MPI starts: a warning that comes early drains the pool at once
    comm = startup.init_mpi()   # as `mtcmpi run` starts
    from .serve import serve_main

    end = comm.bcast(deadline(args.walltime, args.grace) if comm.rank == 0 else None)
    return serve_main(expand(args.connection), end, args.wait, args.grace)


def command_hub(args: argparse.Namespace) -> int:
    from .hub import hub_main

    return hub_main(args.connection, args.ip, args.port, args.max_losses)
