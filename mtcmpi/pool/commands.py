"""The `serve` and `hub` subcommands (argparse only: zmq and MPI are imported when they run)."""
from __future__ import annotations

import argparse

SERVE_EXAMPLES = """\
examples:
  mpirun -n 128 python -m mtcmpi serve --connection ~/.mtcmpi/pool.json --walltime 04:00:00
  sbatch -n 128 -t 04:00:00 --wrap "mpirun python -m mtcmpi serve --connection pool.json"

exit status: 0 the session ended (or was lost), 2 no session to join (or refused),
  75 left at its walltime (a job script that resubmits on 75 starts a pool that joins again)
"""


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `serve` and `hub` on the CLI's subparsers."""
    serve = commands.add_parser("serve", help="a pool of MPI workers for the session a connection "
                                "file names (mtcmpi.connect() in a notebook, or `mtcmpi hub`)",
                                description="Wait for FILE to name a live session, join it, and run "
                                "the tasks it sends on this job's ranks (rank 0 bridges).",
                                epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--connection", required=True, metavar="FILE", help="the connection file "
                       "the session wrote")
    serve.add_argument("--walltime", metavar="HH:MM:SS", help="take no task that would not finish "
                       "before this much time from now, less --grace, then leave (default: the job's "
                       "end when the batch system tells it)")
    serve.add_argument("--grace", type=float, default=20.0, metavar="S", help="margin before the "
                       "walltime (default 20)")
    serve.add_argument("--wait", type=float, default=600.0, metavar="S", help="how long to wait for "
                       "a live session to appear in FILE (default 600)")
    serve.set_defaults(handler=command_serve)

    hub = commands.add_parser("hub", help="a session that outlives a notebook: pools and "
                              "mtcmpi.connect() clients join it (no MPI)",
                              description="Listen, write FILE, and pass tasks between clients "
                              "(mtcmpi.connect(FILE)) and pools (mtcmpi serve) until interrupted.",
                              epilog="example:\n  python -m mtcmpi hub --connection ~/.mtcmpi/pool.json "
                              "--ip 127.0.0.1", formatter_class=argparse.RawDescriptionHelpFormatter)
    hub.add_argument("--connection", required=True, metavar="FILE", help="the connection file to write")
    hub.add_argument("--ip", help="the interface to listen on (default: the address of this host's "
                     "name; 127.0.0.1 for pools on this machine only)")
    hub.add_argument("--port", type=int, help="the port (default: a free one)")
    hub.add_argument("--max-losses", type=int, default=3, metavar="K", help="a task that was on K "
                     "lost pools fails (default 3)")
    hub.set_defaults(handler=command_hub)


def command_serve(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..faults import deadline, parse_walltime
    from .connection import expand

    if args.walltime is not None:
        parse_walltime(args.walltime)   # a bad value fails alike on every rank
    if args.grace < 0 or args.wait < 0:
        raise UsageError("--grace and --wait must be >= 0")
    from mpi4py import MPI

    from .serve import serve_main

    end = MPI.COMM_WORLD.bcast(deadline(args.walltime, args.grace) if MPI.COMM_WORLD.rank == 0 else None)
    return serve_main(expand(args.connection), end, args.wait)


def command_hub(args: argparse.Namespace) -> int:
    from .hub import hub_main

    return hub_main(args.connection, args.ip, args.port, args.max_losses)
