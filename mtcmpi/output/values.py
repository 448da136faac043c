"""Task return values as arrays, and the one rule that decides what each /results/<key> holds.

With --out every return value passes through a Normalizer inside the task's own try-block, so a
value that can never be stored fails that task at once with a clear message and the run goes on.
A value becomes {key: ndarray}: "value" for a plain return, one key per item of a dict. Strings
are stored as UTF-8 bytes; nothing is pickled unless the user opts in.

Whether values of different tasks fit together is decided once for the whole run, when the file
is written, by Schema: for each key, the shape and kind (number, uint64, string) of the task with
the lowest id that returned the key wins; every other task returning another shape or kind for
it fails with ResultMismatch. Numbers of one kind share the narrowest dtype that holds them all.
So the outcome is the same under every schedule and timing, and a run can always be stored.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

NUMERIC = "biufc"
TEXT = np.dtype(object, metadata={"vlen": str})   # h5py.string_dtype("utf-8"), without h5py


class UnstorableResult(TypeError):
    """A task returned something that is not numbers, arrays or strings."""


class ResultMismatch(TypeError):
    """A task returned a different shape or kind under a key than the run's first task with it."""


def describe(dtype: np.dtype, shape: tuple) -> str:
    kind = "string" if dtype.kind == "S" else str(dtype)
    return f"{kind} of shape {shape}" if shape else kind


def kind_of(dtype: np.dtype) -> str:
    """The kind that must agree between tasks: uint64 apart, since beside signed integers it
    would become float64 and lose digits."""
    if dtype.kind == "S":
        return "string"
    return "uint64" if dtype == np.uint64 else "number"


def fill_value(dtype: np.dtype) -> np.ndarray:
    """What rows of tasks without a result hold: NaN, the smallest integer, the largest unsigned,
    False or b'' (a 0-d array of dtype, so that every kind, complex too, converts)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        value: Any = np.nan
    elif dtype.kind == "i":
        value = np.iinfo(dtype).min
    elif dtype.kind == "u":
        value = np.iinfo(dtype).max
    elif dtype.kind == "b":
        value = False
    else:
        value = b""
    return np.array(value, dtype=dtype)


def only_fill(rows: np.ndarray) -> np.ndarray:
    """Which rows (first axis) hold nothing but the fill value, i.e. had no result."""
    flat = rows.reshape(len(rows), -1)
    if rows.dtype.kind in "fc":
        return np.isnan(flat).all(axis=1)
    return (flat == fill_value(rows.dtype)).all(axis=1)


def dataset_name(key: str) -> str:
    """The HDF5 name of /results/<key>: '/' (a group separator in HDF5) and '%' escaped, so that
    'energy/total' and 'energy' are two datasets side by side; the key is also an attribute."""
    name = key.replace("%", "%25").replace("/", "%2F")
    return {"": "%00", ".": "%2E"}.get(name, name)


def result_sets(f: Any) -> dict[str, Any]:
    """The /results datasets of an open results file by key."""
    return {str(ds.attrs.get("key", name)): ds for name, ds in f["results"].items()} if "results" in f else {}


class Normalizer:
    """Turn return values into {key: ndarray}, or fail the task if a value can never be stored."""

    def __init__(self, pickled: bool = False):
        self.pickled = pickled
        self.pickled_keys: set[str] = set()

    def __call__(self, value: Any) -> dict[str, np.ndarray] | None:
        if value is None:
            return None
        items = value.items() if isinstance(value, dict) else (("value", value),)
        return {str(k): self.array(str(k), v) for k, v in items if v is not None}

    def array(self, key: str, v: Any) -> np.ndarray:
        if isinstance(v, str):
            v = v.encode("utf-8")
        if isinstance(v, (bytes, np.bytes_)):
            if bytes(v).endswith(b"\0"):
                raise UnstorableResult(f"returned bytes ending in NUL{under(key)}, which HDF5 "
                                       "strings drop: strip them, or pass --pickle-results")
            return np.array(bytes(v), dtype=bytes)
        a = np.asarray(v) if isinstance(v, (int, float, complex, bool, np.generic, np.ndarray, list, tuple)) else None
        if a is not None and a.dtype.kind == "U":
            a = np.char.encode(a, "utf-8")
        if a is not None and (a.dtype.kind in NUMERIC or a.dtype.kind == "S" and a.dtype.itemsize):
            return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
        if self.pickled:
            self.pickled_keys.add(key)
            return np.array(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL), dtype=bytes)
        what = f"array of {a.dtype}" if a is not None else type(v).__name__
        raise UnstorableResult(f"returned a {what}{under(key)}, which cannot be stored in "
                               "HDF5: return numbers, numpy arrays, strings or a dict of those, "
                               "or pass --pickle-results")


def under(key: str) -> str:
    return "" if key == "value" else f" under key {key!r}"


@dataclass
class Column:
    """What /results/<key> holds: the winning kind and shape, the first task with it, the dtype."""

    dtype: np.dtype
    shape: tuple
    first: int


class Schema:
    """Per key and (kind, shape): the lowest task id and the dtypes seen. Merged across ranks
    and earlier runs, it decides every key's column the same way whatever the schedule."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[tuple[str, tuple], list]] = {}

    def add(self, key: str, dtype: np.dtype, shape: tuple, first: int) -> None:
        dtype = np.dtype(dtype)
        entry = self.seen.setdefault(key, {}).setdefault((kind_of(dtype), tuple(shape)), [first, set()])
        entry[0] = min(entry[0], first)
        entry[1].add(dtype.str)

    def merge(self, other: "Schema") -> None:
        for key, groups in other.seen.items():
            for (kind, shape), (first, dtypes) in groups.items():
                for dt in dtypes:
                    self.add(key, np.dtype(dt), shape, first)

    def columns(self) -> dict[str, Column]:
        """Each key's column: the group of its lowest task id wins."""
        out = {}
        for key, groups in self.seen.items():
            (kind, shape), (first, dtypes) = min(groups.items(), key=lambda g: g[1][0])
            dts = [np.dtype(d) for d in dtypes]
            dtype = (np.dtype(f"S{max(d.itemsize for d in dts)}") if kind == "string"
                     else np.result_type(*dts))
            out[key] = Column(dtype, shape, first)
        return out


def fits(column: Column, dtype: np.dtype, shape: tuple) -> bool:
    return kind_of(np.dtype(dtype)) == kind_of(column.dtype) and tuple(shape) == column.shape


def mismatch(key: str, column: Column, dtype: np.dtype, shape: tuple) -> str:
    """The message of a task whose value under key does not fit the column."""
    return (f"returned {describe(np.dtype(dtype), shape)}{under(key)}, but task {column.first} "
            f"(the run's first with it) returned {describe(column.dtype, column.shape)}: every "
            "task must return the same shape and kind (number, uint64 or string) under a key")
