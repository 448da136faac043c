"""The results file (--out): values.py turns task results into arrays and decides each key's
column; journal.py writes and reads the per-rank journal; direct.py writes numeric rows into
the file during the run; resume.py reads what an earlier run left; hdf5.py is the file's layout
and block-wise row I/O; assemble.py finishes the file from the journals; members.py keeps which
ranks ran a parallel task; results_file.py (Output) ties them to a run. Imported lazily: h5py
comes with it."""
from __future__ import annotations

from typing import Any

__all__ = ["Output", "load_pickled"]


def __getattr__(name: str) -> Any:
    if name == "Output":
        from .results_file import Output
        return Output
    if name == "load_pickled":
        from .hdf5 import load_pickled
        return load_pickled
    raise AttributeError(name)
