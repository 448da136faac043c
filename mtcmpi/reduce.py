"""Reduce a results file: the sum (mean, min, max) of /results/<key> over the tasks that succeeded.

Many workloads end the same way: every task returns a partial array (a hits grid, a histogram,
a partial sum) and the answer is their sum. This does it for any results file, so users do not
rewrite the h5py loop, the status mask and the fill-value check each time::

    python -m mtcmpi reduce results.h5 value --op sum --save grid.npy

Rows reduced are those of tasks whose /tasks status is ok (1) and whose row holds a value, not
only the fill value (a task that returned None, or a dict without this key). The rows are read
in blocks of at most BLOCK_BYTES, so a file much larger than memory can be reduced; the results
agree with numpy's (sum, mean, min, max along axis 0), except that float sums are added block
by block and so may differ from one numpy.sum over all rows in the last bits.

mpi4py is not imported (importing it initialises MPI): this is a serial tool for after the run.
"""
from __future__ import annotations

from typing import Iterator

import h5py
import numpy as np

from .errors import UsageError
from .output.values import only_fill, result_sets, row_bytes
from .report import open_results
from .tasklog import OK

OPS = ("sum", "mean", "min", "max")
COMBINE = {"sum": np.add, "mean": np.add, "min": np.minimum, "max": np.maximum}
BLOCK_BYTES = 32 << 20    # rows read at a time: at most this many bytes, at least one row
SHOW_ELEMENTS = 20        # reduce_main prints the value itself up to this many elements


def reduce(path: str, key: str = "value", op: str = "sum") -> np.ndarray:
    """The op (sum, mean, min, max) along axis 0 of /results/<key> over the tasks that succeeded.

    Raises UsageError for a missing or unreadable file, a missing key (naming the keys that
    exist), a key holding strings or pickles, an unknown op, or no successful rows.
    """
    return reduce_counted(path, key, op)[0]


def reduce_counted(path: str, key: str = "value", op: str = "sum") -> tuple[np.ndarray, int, int]:
    """(reduced value, rows reduced, tasks in the file): reduce() plus the counts it used."""
    if op not in OPS:
        raise UsageError(f"unknown reduction {op!r}: use one of {', '.join(OPS)}")
    with open_results(path) as f:
        ds, status = dataset(f, path, key), f["tasks"]
        total, rows = None, 0
        for block in ok_blocks(ds, status):
            part = partial(block, op)
            total = part if total is None else COMBINE[op](total, part)
            rows += len(block)
        if total is None:
            raise UsageError(f"{path}: no task that succeeded has a value under results/{key} "
                             f"({len(ds)} tasks; see: python -m mtcmpi report {path})")
        return (total / rows if op == "mean" else total), rows, len(ds)


def dataset(f: h5py.File, path: str, key: str) -> h5py.Dataset:
    """/results/<key>, checked to hold numbers; UsageError naming the keys there are if not."""
    sets = result_sets(f)
    keys = sorted(sets)
    if key not in keys:
        there = f"its keys: {', '.join(keys)}" if keys else "it holds no results (no task returned a value)"
        raise UsageError(f"{path}: no results/{key}; {there}")
    ds = sets[key]
    pickled = str(f.attrs.get("pickled_results", "")).split(",")
    if ds.dtype.kind not in "biufc":
        what = "pickles" if key in pickled else "strings"
        raise UsageError(f"{path}: results/{key} holds {what}, which cannot be reduced")
    return ds


def ok_blocks(ds: h5py.Dataset, tasks: h5py.Dataset) -> Iterator[np.ndarray]:
    """The rows of ds whose task succeeded and that hold a value, a block at a time."""
    step = max(1, BLOCK_BYTES // max(1, row_bytes(ds.dtype, ds.shape[1:])))
    for lo in range(0, len(ds), step):
        ok = np.flatnonzero(tasks.fields("status")[lo:lo + step] == OK)
        if len(ok):
            block = ds[lo:lo + step][ok]
            block = block[~only_fill(block)]
            if len(block):
                yield block


def partial(block: np.ndarray, op: str) -> np.ndarray:
    """The op over one block's rows; a mean accumulates in float64 for integers and booleans."""
    if op == "mean" and block.dtype.kind in "biu":
        return np.add.reduce(block, axis=0, dtype=np.float64)
    return COMBINE[op].reduce(block, axis=0)


def reduce_main(path: str, key: str = "value", op: str = "sum", out: str | None = None) -> int:
    """`mtcmpi reduce`: reduce, print a short summary, save with numpy.save if out is given."""
    value, rows, tasks = reduce_counted(path, key, op)
    print(f"{path}: {op} of results/{key} over {rows:,} of {tasks:,} tasks (those that succeeded "
          f"with a value): shape {value.shape}, dtype {value.dtype}")
    if value.size <= SHOW_ELEMENTS:
        print(f"  value: {np.array2string(np.asarray(value), separator=', ')}")
    else:
        print(f"  min {value.min()}, max {value.max()}")
    if out is not None:
        try:
            np.save(out, value)
        except OSError as exc:
            raise UsageError(f"--save {out}: {exc.strerror or exc}") from None
        print(f"  saved to {out if out.endswith('.npy') else out + '.npy'}")
    return 0
