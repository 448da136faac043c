"""`mtcmpi jobscript`: a ready-to-submit batch script for Slurm, SGE (Grid Engine) or PBS/Torque.

The script is jobscripts/<scheduler>.sh (the directives, and how that scheduler names the job,
counts its cores, warns before the walltime and takes a resubmission) followed by
jobscripts/common.sh (start mpirun in the background, pass the warning on to it as SIGUSR1, and
submit the same script again while the run stopped early). Both are filled with
string.Template.substitute, so a placeholder without a value is an error, never an empty
directive. Every value is checked here first; the arguments after -- (those of `mtcmpi run`,
or `serve ...` for a pool that joins a session) are checked by that command's own parser (so a
typo fails now, not in the queue) and shell-quoted.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing on every rank

from . import __version__
from .errors import UsageError
from .faults import parse_walltime
from .options import RunOptions
from .pool.commands import parse_serve
from .run_args import add_subcommand, parse_run

if TYPE_CHECKING:   # shlex, string, typing: imported when a script is rendered, not by every rank
    from typing import Sequence

# jobscripts/ of the source tree (a clone, an editable install), else where setup.py's
# data_files put it (an installed copy)
TEMPLATES = next((d for d in (Path(__file__).resolve().parent.parent / "jobscripts",
                              Path(sys.prefix) / "share" / "mtcmpi" / "jobscripts") if d.is_dir()),
                 Path(sys.prefix) / "share" / "mtcmpi" / "jobscripts")
SCHEDULERS = ("slurm", "sge", "pbs")
SUBMIT = {"slurm": "sbatch", "sge": "qsub", "pbs": "qsub"}
QUEUE = {"slurm": "#SBATCH --partition={}", "sge": "#$ -q {}", "pbs": "#PBS -q {}"}
MARKER = "# mtcmpi-jobscript"   # common.sh looks for it to tell this script from a shell's $0
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
WORD = re.compile(r"[A-Za-z0-9_.@:/+-]+")   # queue, PE and module names: no shell syntax

EXAMPLES = """\
examples:
  python -m mtcmpi jobscript --scheduler slurm --cores 256 --walltime 12:00:00 -o scan.sbatch \\
      -- mymodel:simulate --params scan.csv --out scan.h5
  sbatch scan.sbatch
  python -m mtcmpi jobscript --scheduler sge --cores 64 --walltime 2:00:00 --pe orte -o scan.sge \\
      -- mymodel:simulate --params scan.csv --out scan.h5
  python -m mtcmpi jobscript --scheduler pbs --cores 64 --ppn 16 --walltime 24:00:00 --queue long \\
      --module openmpi -o scan.pbs -- --command 'sim -i {}' --files 'data/*.inp' --out sim.h5
  python -m mtcmpi jobscript --scheduler slurm --cores 128 --walltime 04:00:00 -o pool.sbatch \\
      -- serve --connection ~/.mtcmpi/pool.json       # a pool for mtcmpi.connect() in a notebook

The job writes its log to <name>.<job id>.log in the directory it was submitted from. Before the
walltime it passes SIGUSR1 to mtcmpi (Slurm --signal, SGE s_rt; PBS sends none, so mtcmpi
gets --walltime W - S and stops by itself);
mtcmpi stores everything and exits 75, and the script submits itself again (at most
--max-resubmit times, or $MTCMPI_MAX_RESUBMIT); the new job resumes the same --out. A pool
(-- serve ...) takes no new task, gives the rest back to its session and exits 75; the script
submits itself again likewise, and the new pool joins the session again. A pool whose session
ended exits 0 and is not resubmitted.

exit status: 0 script written, 2 bad input (nothing written)
"""


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `jobscript` on the CLI's subparsers."""
    p = add_subcommand(
        commands, "jobscript", command_jobscript,
        help="write a batch script (Slurm, SGE, PBS) that runs mtcmpi on the allocated cores and "
        "resubmits itself until done",
        description="Render a job script that activates the environment, runs `mpirun python -m "
        "mtcmpi run RUN_ARGS` on the job's cores, stops the run cleanly before the walltime and "
        "submits itself again until every task has run. RUN_ARGS (after --) must contain --out: "
        "resuming needs it. `-- serve SERVE_ARGS` instead runs a pool for a session "
        "(mtcmpi.connect()), which leaves before the walltime and is resubmitted while its session "
        "goes on.",
        examples=EXAMPLES)
    p.add_argument("--scheduler", required=True, choices=SCHEDULERS, help="the batch system")
    p.add_argument("--cores", required=True, type=int, metavar="N", help="MPI ranks (one per core)")
    p.add_argument("--walltime", required=True, metavar="HH:MM:SS", help="the job's time limit")
    p.add_argument("--queue", metavar="Q", help="queue (Slurm: partition); default: the site's")
    p.add_argument("--name", default="mtcmpi", help="job name, also the log's name (default mtcmpi)")
    p.add_argument("--venv", metavar="DIR", help="the virtualenv with mtcmpi, on a filesystem every "
                   "node sees (default: the one running this command)")
    p.add_argument("--module", action="append", default=[], metavar="NAME", help="`module load "
                   "NAME` before activating the venv (repeat for several)")
    p.add_argument("--warning", type=int, metavar="S", help="seconds before the walltime at which "
                   "mtcmpi is told to stop (default 300, or a fifth of the walltime if less); running "
                   "tasks get --grace (default: half of it) to finish")
    p.add_argument("--mpirun", default="mpirun", metavar="CMD", help="the launcher, with options "
                   "(default mpirun), e.g. 'mpirun --bind-to none'")
    p.add_argument("--max-resubmit", type=int, default=10, metavar="N", help="resubmit at most N "
                   "times (default 10; $MTCMPI_MAX_RESUBMIT in the job overrides it)")
    p.add_argument("--ppn", type=int, metavar="P", help="PBS only: cores per node, for "
                   "nodes=N/P:ppn=P (default: all N on one node)")
    p.add_argument("--pe", metavar="NAME", help="SGE only: the parallel environment (default mpi; "
                   "qconf -spl lists them)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the script here (default: print it)")
    p.add_argument("job_args", nargs="*", metavar="-- RUN_ARGS | -- serve SERVE_ARGS",
                   help="the arguments of mtcmpi run (optionally after the word run), or serve "
                   "and its arguments")


def command_jobscript(args: argparse.Namespace) -> int:
    """Render the script and print it or write it to -o."""
    script = os.path.abspath(args.output) if args.output else ""
    text = render(args.scheduler, args.cores, args.walltime, args.job_args, queue=args.queue,
                  name=args.name, venv=args.venv, modules=args.module, warning=args.warning,
                  mpirun=args.mpirun, max_resubmit=args.max_resubmit, ppn=args.ppn, pe=args.pe,
                  script=script)
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"-o {args.output}: {exc.strerror}") from None
    os.chmod(args.output, 0o755)
    print(f"wrote {args.output}: submit it with `{SUBMIT[args.scheduler]} {args.output}`")
    return 0


def render(scheduler: str, cores: int, walltime: str, job_args: list[str], *, queue: str | None = None,
           name: str = "mtcmpi", venv: str | None = None, modules: Sequence[str] = (),
           warning: int | None = None, mpirun: str = "mpirun", max_resubmit: int = 10,
           ppn: int | None = None, pe: str | None = None, script: str = "") -> str:
    """The job script as text; UsageError names the first bad value."""
    import shlex
    from string import Template

    if scheduler not in SCHEDULERS:
        raise UsageError(f"--scheduler {scheduler!r}: use one of {', '.join(SCHEDULERS)}")
    if cores < 1:
        raise UsageError(f"--cores must be >= 1, not {cores}")
    seconds = whole_seconds(walltime)
    warning = min(300, seconds // 5) if warning is None else warning
    if not 0 < warning < seconds:
        raise UsageError(f"--warning {warning} s must be > 0 and shorter than the walltime "
                         f"({seconds} s): mtcmpi needs that long to stop before the job is killed")
    if not NAME.fullmatch(name) or (scheduler == "pbs" and len(name) > 15):
        raise UsageError(f"--name {name!r}: a letter, then letters, digits, '_', '.' or '-'"
                         + (" (PBS: at most 15)" if scheduler == "pbs" else ""))
    if max_resubmit < 0:
        raise UsageError(f"--max-resubmit must be >= 0, not {max_resubmit}")
    for option, value in [("--queue", queue), ("--pe", pe)] + [("--module", m) for m in modules]:
        if value is not None and not WORD.fullmatch(value):
            raise UsageError(f"{option} {value!r}: only letters, digits and _ . @ : / + - are allowed")
    launcher = shlex.split(mpirun)
    if not launcher:
        raise UsageError("--mpirun is empty: give the launcher, e.g. mpirun")
    values = dict(name=name, cores=cores, walltime=clock(seconds), warning=warning,
                  queue_directive=(QUEUE[scheduler].format(queue) if queue else
                                   "# (no --queue: the site's default queue)"),
                  venv=shlex.quote(environment(venv)), mpirun=quoted(launcher),
                  modules=module_line(modules),
                  max_resubmit=max_resubmit, script=shlex.quote(script), marker=MARKER,
                  version=__version__, submit=SUBMIT[scheduler])
    values.update(scheduler_values(scheduler, cores, seconds, warning, ppn, pe))
    subcommand, args, out = job_command(job_args, warning, values.get("stop_after"))
    values.update(subcommand=subcommand, arguments=quoted(args), out=shlex.quote(out))
    return "".join(Template(read(part)).substitute(values) for part in (scheduler, "common"))


def scheduler_values(scheduler: str, cores: int, seconds: int, warning: int, ppn: int | None,
                     pe: str | None) -> dict[str, object]:
    """The values only one scheduler's template uses; options for another one are refused."""
    if ppn is not None and scheduler != "pbs":
        raise UsageError(f"--ppn is for PBS (nodes=N:ppn=P); {scheduler} places the --cores ranks itself")
    if pe is not None and scheduler != "sge":
        raise UsageError(f"--pe is for SGE (its parallel environment), not {scheduler}")
    if scheduler == "sge":
        return {"pe": pe or "mpi", "soft_walltime": clock(seconds - warning)}
    if scheduler == "pbs":
        ppn = cores if ppn is None else ppn
        if ppn < 1 or cores % ppn:
            raise UsageError(f"--ppn {ppn} must divide --cores {cores} (nodes=cores/ppn)")
        return {"nodes": cores // ppn, "ppn": ppn, "stop_after": clock(seconds - warning)}
    return {}


def job_command(job_args: list[str], warning: int, stop_after: str | None = None
                ) -> tuple[str, list[str], str]:
    """(run or serve, its arguments, the --out file or ''), checked by that command's own
    parser, so mistakes show now. --grace (half the warning) and --walltime stop_after (for a
    scheduler that sends no warning) are added unless given."""
    subcommand, args = ((job_args[0], job_args[1:]) if job_args[:1] in (["run"], ["serve"])
                        else ("run", job_args))
    if not args and subcommand == "run":
        raise UsageError("give the arguments of mtcmpi run after --, e.g. -- mymodel:simulate "
                         "--params scan.csv --out scan.h5 (or -- serve --connection FILE)")
    given = {a.split("=")[0] for a in args}
    if "--grace" not in given:
        args = [*args, "--grace", str(max(1, warning // 2))]
    if stop_after and "--walltime" not in given:
        args = [*args, "--walltime", stop_after]
    if subcommand == "serve":
        grace, out = parse_serve(args).grace, ""
    else:
        options = RunOptions.from_args(parse_run(args))
        if options.out is None:
            raise UsageError("the run arguments need --out FILE.h5: a job stopped at the walltime "
                             "resumes from that file when the script submits itself again")
        grace, out = options.grace, options.out
    if not grace < warning:
        raise UsageError(f"--grace {grace:g} must be shorter than --warning {warning}: "
                         + ("the results are written after the grace, before the job is killed"
                            if subcommand == "run" else "the pool leaves after the grace, before "
                            "the job is killed"))
    return subcommand, args, out


def whole_seconds(walltime: str) -> int:
    """--walltime as whole seconds (> 0), which every scheduler takes."""
    seconds = parse_walltime(walltime)
    if seconds <= 0 or seconds != int(seconds):
        raise UsageError(f"--walltime {walltime!r} must be a positive whole number of seconds, "
                         "as HH:MM:SS")
    return int(seconds)


def clock(seconds: int) -> str:
    """Seconds as HH:MM:SS (hours may exceed 24), the form Slurm, SGE and PBS all read."""
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def environment(venv: str | None) -> str:
    """The venv the job activates: the given one, or the one running this command."""
    if venv is None:
        if sys.prefix == sys.base_prefix:
            raise UsageError("this python is not in a virtualenv: give --venv DIR (the venv with "
                             "mtcmpi, on a filesystem every node sees)")
        venv = sys.prefix
    venv = os.path.abspath(venv)
    if not os.access(os.path.join(venv, "bin", "python"), os.X_OK):
        raise UsageError(f"--venv {venv}: no bin/python there; give the virtualenv that has mtcmpi")
    return venv


def module_line(modules: Sequence[str]) -> str:
    """The `module load` line (which stops the job if it fails), or a comment without --module."""
    if not modules:
        return "# (no --module: the venv brings everything)"
    load = f"module load {' '.join(modules)}"
    return (f'{load} || {{ say "{load} failed (is the module command set up in batch jobs '
            'here?)"; exit 2; }')


def quoted(words: Sequence[str]) -> str:
    """Words as the inside of a bash array literal, each shell-quoted."""
    import shlex

    return " ".join(shlex.quote(w) for w in words)


def read(part: str) -> str:
    path = TEMPLATES / f"{part}.sh"
    try:
        return path.read_text()
    except OSError:
        raise UsageError(f"job script template {path} is missing: reinstall mtcmpi (setup.py "
                         "installs jobscripts/ there) or run from a clone") from None
