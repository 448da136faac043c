"""Task return values as arrays: what can go into the results file, checked task by task.

With --out, every return value passes through a Normalizer inside the task's own try-block,
so a value that cannot be stored, or that changes shape or kind, fails that task with a clear
message and the run goes on. A value becomes {key: ndarray}: "value" for a plain return,
one key per item of a dict. Strings are stored as UTF-8 bytes; nothing is pickled unless the
user opts in (then the key holds pickle bytes and is marked so in the file).
"""
from __future__ import annotations

import pickle
from typing import Any

import numpy as np   # with --out every rank converts its results: imported at start-up (startup.py)

from .errors import UsageError

NUMERIC = "biufc"


class UnstorableResult(TypeError):
    """A task returned something that is not numbers, arrays or strings."""


class ResultMismatch(TypeError):
    """A task returned a different shape or kind than the tasks before it."""


def describe(a: np.ndarray) -> str:
    kind = "string" if a.dtype.kind == "S" else str(a.dtype)
    return f"{kind} of shape {a.shape}" if a.shape else kind


class Normalizer:
    """Turn return values into {key: ndarray}; remember the first one's keys, kinds and shapes."""

    def __init__(self, pickled: bool = False):
        self.pickled = pickled
        self.pickled_keys: set[str] = set()
        self.schema: dict[str, tuple[str, tuple]] | None = None

    def __call__(self, value: Any) -> dict[str, np.ndarray] | None:
        if value is None:
            return None
        items = value.items() if isinstance(value, dict) else (("value", value),)
        arrays = {str(k): self.array(str(k), v) for k, v in items if v is not None}
        self.check(arrays)
        return arrays

    def array(self, key: str, v: Any) -> np.ndarray:
        if isinstance(v, str):
            return np.array(v.encode("utf-8"), dtype=bytes)
        if isinstance(v, (bytes, np.bytes_)):
            return np.array(bytes(v), dtype=bytes)
        a = np.asarray(v) if isinstance(v, (int, float, complex, bool, np.generic, np.ndarray, list, tuple)) else None
        if a is not None and a.dtype.kind in NUMERIC + "S":
            return a
        if self.pickled:
            self.pickled_keys.add(key)
            return np.array(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL), dtype=bytes)
        where = "" if key == "value" else f" under key {key!r}"
        raise UnstorableResult(f"returned a {type(v).__name__}{where}, which cannot be stored in "
                               "HDF5: return numbers, numpy arrays, strings or a dict of those, "
                               "or pass --pickle-results")

    def check(self, arrays: dict[str, np.ndarray]) -> None:
        shape = {k: ("S" if a.dtype.kind == "S" else "n", a.shape) for k, a in arrays.items()}
        if self.schema is None:
            self.schema = shape
        elif shape != self.schema:
            raise ResultMismatch(f"returned {show(arrays)}, but earlier tasks returned "
                                 f"{show_schema(self.schema)}: every task of a run must return the "
                                 "same keys, shapes and kind (number or string)")


def show(arrays: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k}: {describe(a)}" for k, a in sorted(arrays.items()))


def show_schema(schema: dict[str, tuple[str, tuple]]) -> str:
    return ", ".join(f"{k}: {'string' if kind == 'S' else 'number'}{' of shape ' + str(s) if s else ''}"
                     for k, (kind, s) in sorted(schema.items()))


def fill_value(dtype: np.dtype) -> Any:
    """What rows of tasks without a result hold: NaN, the smallest integer, False or b''."""
    if dtype.kind in "fc":
        return np.nan
    if dtype.kind == "i":
        return np.iinfo(dtype).min
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    if dtype.kind == "b":
        return False
    return b""


def merge_schemas(parts: list[dict[str, tuple[str, tuple]]]) -> dict[str, tuple[np.dtype, tuple]]:
    """One dtype and shape per key from every rank's (dtype.str, shape); UsageError if they clash.

    Every rank merges the same allgathered list, so all raise alike."""
    merged: dict[str, tuple[np.dtype, tuple]] = {}
    for part in parts:
        for key, (dt, shape) in part.items():
            dt = np.dtype(dt)
            if key not in merged:
                merged[key] = (dt, shape)
                continue
            old, old_shape = merged[key]
            if old_shape != shape or (old.kind == "S") != (dt.kind == "S"):
                raise UsageError(f"results under key {key!r} differ between tasks: "
                                 f"{describe(np.empty(old_shape, old))} and {describe(np.empty(shape, dt))}; "
                                 "nothing is lost (the journal keeps every finished task), but "
                                 "every task must return the same shapes: fix it and run with --restart")
            merged[key] = (np.result_type(old, dt) if dt.kind != "S" else np.dtype(f"S{max(old.itemsize, dt.itemsize, 1)}"), shape)
    return merged
