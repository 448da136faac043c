"""Seed workload 1: "touch an .out for every .inp", the smallest possible file-producing task.

Each task takes one input path ``<stem>.inp`` and creates (or updates the time stamp of) the
empty file ``<stem>.out`` next to it, standing in for a simulation code. It measures pure
task overhead: function mode (``kernels.touch:touch``) against command mode, where a new
Python starts per file, as in the user's original ``python runner.py data/x.inp``.

Command line (kept free of argparse, whose import would cost every one of 9,999 runs)::

    python kernels/touch.py data/0001.inp [more.inp ...]   # or: python -m kernels.touch ...
    python -m kernels.touch --make data 9999               # create data/0000.inp .. 9998.inp

Exit status 0 on success; 1 with one line per missing input on stderr; 2 on bad usage.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

USAGE = ("usage: python -m kernels.touch PATH.inp [PATH.inp ...]\n"
         "       python -m kernels.touch --make DIRECTORY N")


def out_path(path: str) -> str:
    """The output belonging to an input: the same path with its extension replaced by .out."""
    return os.path.splitext(path)[0] + ".out"


def touch(path: str) -> int:
    """Create or update the empty ``<path without extension>.out``; return 0 (bytes written).

    Raises FileNotFoundError when the input itself does not exist, so a task with a wrong
    path fails instead of producing an output for nothing.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such input file: {path}")
    target = out_path(path)
    with open(target, "a", encoding="utf-8"):
        os.utime(target)
    return 0


def make_inputs(directory: str, n: int) -> list[str]:
    """Create `directory` (if needed) holding n empty inputs 0000.inp .. (n-1).inp; list them.

    Names are zero-padded to at least four digits, so they sort in task order.
    """
    os.makedirs(directory, exist_ok=True)
    width = max(4, len(str(n - 1)))
    paths = [os.path.join(directory, f"{i:0{width}d}.inp") for i in range(n)]
    for path in paths:
        with open(path, "w", encoding="utf-8"):
            pass
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Touch the .out of every input path given, or --make DIRECTORY N inputs; exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "--make":
        return _make(args[1:])
    status = 0
    for path in args:
        try:
            touch(path)
        except OSError as exc:
            print(f"touch.py: {exc}", file=sys.stderr)
            status = 1
    return status


def _make(args: list[str]) -> int:
    """--make DIRECTORY N: create the inputs, or explain the usage."""
    if len(args) != 2 or not args[1].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    make_inputs(args[0], int(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
