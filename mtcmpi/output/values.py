"""Task return values as arrays, and the one rule that decides what each /results/<key> holds.

With --out every return value passes through a Normalizer inside the task's own try-block, so a
value that can never be stored fails that task at once with a clear message and the run goes on.
A value becomes {key: ndarray}: "value" for a plain return, one key per item of a dict. Strings
are stored as UTF-8 bytes; nothing is pickled unless the user opts in. A plain Python number or
string becomes a Plain, the same bytes and dtype without numpy: a worker whose tasks return
only those never imports numpy (0.1 CPU-s a rank, most of a rank's start-up on a full node).

Whether values of different tasks fit together is decided once for the whole run, when the file
is written, by Schema: for each key, the shape and kind (number, uint64, string) of the task with
the lowest id that returned the key wins; every other task returning another shape or kind for
it fails with ResultMismatch. Numbers of one kind share the narrowest dtype that holds them all.
So the outcome is the same under every schedule and timing, and a run can always be stored.
"""
from __future__ import annotations

import math
import pickle
import struct
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:   # imported where used: only ranks with arrays to store, and the writers, load it
    import numpy as np

NUMERIC = "biufc"
NATIVE = "<" if sys.byteorder == "little" else ">"


def __getattr__(name: str) -> Any:
    """TEXT, h5py.string_dtype("utf-8") without h5py, made on first use (it needs numpy)."""
    if name == "TEXT":
        import numpy as np

        return np.dtype(object, metadata={"vlen": str})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UnstorableResult(TypeError):
    """A task returned something that is not numbers, arrays or strings."""


class ResultMismatch(TypeError):
    """A task returned a different shape or kind under a key than the run's first task with it."""


def row_bytes(dtype: np.dtype, shape: tuple) -> int:
    """The bytes of one row of `shape` items of `dtype` (math.prod: numpy's is ~8 us a call,
    and the store asks once per journal frame and key)."""
    return int(dtype.itemsize * math.prod(shape))


def describe(dtype: np.dtype, shape: tuple) -> str:
    kind = "string" if dtype.kind == "S" else str(dtype)
    return f"{kind} of shape {shape}" if shape else kind


def code_of(dtype: "np.dtype | str") -> str:
    """A dtype as numpy's dtype.str ('<i8', '|S5'), which the journal and Schema keep."""
    if isinstance(dtype, str):
        return dtype
    import numpy as np   # a dtype given: numpy is loaded already

    return np.dtype(dtype).str


def kind_of(dtype: "np.dtype | str") -> str:
    """The kind that must agree between tasks: uint64 apart, since beside signed integers it
    would become float64 and lose digits."""
    code = code_of(dtype)
    if code[1] == "S":
        return "string"
    return "uint64" if code[1:] == "u8" else "number"


def fill_value(dtype: np.dtype) -> np.ndarray:
    """What rows of tasks without a result hold: NaN, the smallest integer, the largest unsigned,
    False or b'' (a 0-d array of dtype, so that every kind, complex too, converts)."""
    import numpy as np

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
    import numpy as np

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


class Plain:
    """A Python number or string as a 0-d array would store it (numpy's dtype.str and raw
    bytes), made without numpy; item() and == give the value back, as for a 0-d array."""

    __slots__ = ("value", "dtype", "data")
    shape = ()

    def __init__(self, value: Any, dtype: str, data: bytes):
        self.value, self.dtype, self.data = value, dtype, data

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def item(self) -> Any:
        return self.value

    def __eq__(self, other: Any) -> Any:
        return self.value == (other.value if isinstance(other, Plain) else other)

    def __repr__(self) -> str:
        return f"Plain({self.value!r}, {self.dtype!r})"


def plain(v: Any) -> Plain | None:
    """v as numpy's np.asarray(v) would store it, if v is a bool, int, float or complex whose
    array needs no numpy to make (None otherwise: numpy decides)."""
    kind = type(v)   # exact types: numpy's scalars (np.float64 is a float) take numpy's way
    if kind is bool:
        return Plain(v, "|b1", b"\1" if v else b"\0")
    if kind is int:
        if -(1 << 63) <= v < 1 << 63:
            return Plain(v, NATIVE + "i8", v.to_bytes(8, sys.byteorder, signed=True))
        return Plain(v, NATIVE + "u8", v.to_bytes(8, sys.byteorder)) if 0 <= v < 1 << 64 else None
    if kind is float:
        return Plain(v, NATIVE + "f8", struct.pack("=d", v))
    if kind is complex:
        return Plain(v, NATIVE + "c16", struct.pack("=dd", v.real, v.imag))
    return None


class Normalizer:
    """Turn return values into {key: ndarray}, or fail the task if a value can never be stored."""

    def __init__(self, pickled: bool = False):
        self.pickled = pickled
        self.pickled_keys: set[str] = set()

    def __call__(self, value: Any) -> "dict[str, np.ndarray | Plain] | None":
        if value is None:
            return None
        items = value.items() if isinstance(value, dict) else (("value", value),)
        return {str(k): self.array(str(k), v) for k, v in items if v is not None}

    def array(self, key: str, v: Any) -> "np.ndarray | Plain":
        if isinstance(v, str):
            v = v.encode("utf-8")
        if isinstance(v, bytes):   # np.bytes_ too
            v = bytes(v)
            if v.endswith(b"\0"):
                raise UnstorableResult(f"returned bytes ending in NUL{under(key)}, which HDF5 "
                                       "strings drop: strip them, or pass --pickle-results")
            return Plain(v, f"|S{len(v) or 1}", v or b"\0")   # numpy's S1 for b''
        made = plain(v)
        if made is not None:
            return made
        import numpy as np   # an array, a numpy scalar, a list: the task has numpy, or needs it

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


class Column(NamedTuple):
    """What /results/<key> holds: the winning kind and shape, the first task with it, the dtype."""

    dtype: np.dtype
    shape: tuple
    first: int


class Schema:
    """Per key and (kind, shape): the lowest task id and the dtypes seen. Merged across ranks
    and earlier runs, it decides every key's column the same way whatever the schedule."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[tuple[str, tuple], list]] = {}

    def add(self, key: str, dtype: "np.dtype | str", shape: tuple, first: int) -> None:
        code = code_of(dtype)
        entry = self.seen.setdefault(key, {}).setdefault((kind_of(code), tuple(shape)), [first, set()])
        entry[0] = min(entry[0], first)
        entry[1].add(code)

    def merge(self, other: "Schema") -> None:
        for key, groups in other.seen.items():
            for (kind, shape), (first, dtypes) in groups.items():
                for dt in dtypes:
                    self.add(key, dt, shape, first)

    def columns(self) -> dict[str, Column]:
        """Each key's column: the group of its lowest task id wins."""
        import numpy as np

        out = {}
        for key, groups in self.seen.items():
            (kind, shape), (first, dtypes) = min(groups.items(), key=lambda g: g[1][0])
            dts = [np.dtype(d) for d in dtypes]
            dtype = (np.dtype(f"S{max(d.itemsize for d in dts)}") if kind == "string"
                     else np.result_type(*dts))
            out[key] = Column(dtype, shape, first)
        return out


def fits(column: Column, dtype: np.dtype, shape: tuple) -> bool:
    return kind_of(dtype) == kind_of(column.dtype) and tuple(shape) == column.shape


def mismatch(key: str, column: Column, dtype: np.dtype, shape: tuple) -> str:
    """The message of a task whose value under key does not fit the column."""
    import numpy as np

    return (f"returned {describe(np.dtype(dtype), shape)}{under(key)}, but task {column.first} "
            f"(the run's first with it) returned {describe(column.dtype, column.shape)}: every "
            "task must return the same shape and kind (number, uint64 or string) under a key")
