"""Task sources: a callable named 'module:function' plus a stream of (task id, arguments).

A task id is the task's position in the list. Sources stream: rank 0 reads a params file once
to count and check it, and the master then hands rows out as it reads them, so ten million tasks
never sit in memory at once.
"""
from __future__ import annotations

import codecs
import importlib
import itertools
import os
import sys
from array import array
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from .errors import UsageError, exception_line

if TYPE_CHECKING:   # numpy is imported only to fingerprint tasks (--out)
    import hashlib

    import numpy as np

Task = tuple  # (task id, payload)

# How the payload is passed to the function: f(x), f(*x) or f(**x). Fixed per run, so the
# worker's hot loop never branches on it.
CALL_ONE, CALL_STAR, CALL_KEYWORDS = "one", "star", "keywords"
CELL_LIMIT = 2**31 - 1   # csv's default field limit is 128 KB


def resolve(target: str) -> Callable:
    """Import 'package.module:function' (or 'module:Class.method') and return the callable."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"target {target!r} is not of the form package.module:function")
    if os.getcwd() not in sys.path:  # the console script does not put the cwd on sys.path
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import module {module_name!r} of target {target!r}: {exc} "
                         "(is it on PYTHONPATH, or in the directory you run from?)") from None
    except BaseException as exc:   # also sys.exit() or KeyboardInterrupt in the module
        raise UsageError(f"importing {module_name!r} of target {target!r} failed: "
                         f"{exception_line(exc)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r} (target {target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"target {target!r} is a {type(obj).__name__}, not callable")
    return obj


def invoker(fn: Callable, call: str) -> Callable[[Any], Any]:
    """A one-argument function that calls fn with a payload the way the source says."""
    if call == CALL_ONE:
        return fn
    if call == CALL_STAR:
        return lambda p: fn(*p)
    return lambda p: fn(**p)


def check_call(fn: Callable, call: str, payload: Any, what: str, comm: bool = False) -> None:
    """Raise UsageError if fn cannot take this payload (checked once, on the first task); with
    comm (a parallel task, see groups.py) fn also gets a `comm` keyword if it has the parameter."""
    import inspect   # rank 0 only, once: with ast, dis and tokenize it is ~6 ms of a rank's start-up

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: the task itself will tell
    extra = {"comm": None} if comm and "comm" in sig.parameters else {}
    try:
        if call == CALL_ONE:
            sig.bind(payload, **extra)
        elif call == CALL_STAR:
            sig.bind(*payload, **extra)
        else:
            sig.bind(**payload, **extra)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise UsageError(f"{name}{sig} cannot take the arguments of {what}: {exc}") from None


class Source:
    """A task list: its length, how payloads are passed, and a stream of (id, payload)."""

    call = CALL_ONE

    def count(self) -> int:
        """Number of tasks; rank 0 calls this once, and it also validates the input."""
        raise NotImplementedError

    def tasks(self) -> Iterator[Task]:
        """Every task in id order."""
        raise NotImplementedError

    def take(self, ids: Iterable[int]) -> Iterator[Task]:
        """The tasks with these ids (ascending), streaming past the others."""
        wanted = iter(ids)
        nxt = next(wanted, None)
        for tid, payload in self.tasks():
            if nxt is None:
                return
            if tid == nxt:
                yield tid, payload
                nxt = next(wanted, None)

    def take_any(self, ids: list[int]) -> Iterator[Task]:
        """The tasks with these ids in the order given (cost order): one pass over the source,
        holding the wanted payloads until their turn."""
        wanted = set(ids)
        payloads = {tid: payload for tid, payload in self.tasks() if tid in wanted}
        return ((tid, payloads[tid]) for tid in ids)

    def describe(self, tid: int) -> str:
        return f"task {tid}"

    def fingerprint(self, digest: "hashlib._Hash") -> np.ndarray | None:
        """Feed what identifies this task list into digest (resume refuses a different one);
        return each task's key (see task_key), by which a later run matches tasks by arguments."""
        keys = []
        for tid, payload in self.tasks():
            text = repr(payload).encode()
            digest.update(b"%d:" % tid + text)
            keys.append(task_key(text))
        return key_array(keys)


class CountSource(Source):
    """--count N: task i gets the single argument i."""

    def __init__(self, n: int):
        if n < 0:
            raise UsageError(f"--count must be >= 0, not {n}")
        self.n = n

    def count(self) -> int:
        return self.n

    def tasks(self) -> Iterator[Task]:
        return ((i, i) for i in range(self.n))

    def take(self, ids: Iterable[int]) -> Iterator[Task]:
        return ((i, i) for i in ids)

    take_any = take

    def fingerprint(self, digest: "hashlib._Hash") -> "CountKeys":
        digest.update(f"count {self.n}".encode())
        return CountKeys(self.n)


class CountKeys:
    """The keys of --count tasks, a function of the id (task i's argument is i), computed a
    block at a time when they are written or matched: never 10^8 of them up front (a blake2b
    per task, as task_key does for rows, took 75 s on rank 0 before 10^8 tasks could start)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, part: slice | int) -> "np.ndarray":
        import numpy as np   # only to fingerprint tasks (--out, --costs-from)

        if isinstance(part, slice):
            return count_keys(np.arange(*part.indices(self.n), dtype=np.uint64))
        return count_keys(np.asarray(range(self.n)[part], np.uint64))

    def __array__(self, dtype=None, copy=None) -> "np.ndarray":
        return self[:].astype(dtype or "uint64")

    def tolist(self) -> list[int]:
        return self[:].tolist()


def count_keys(ids: "np.ndarray") -> "np.ndarray":
    """The key of task i of --count: a 64-bit mix of i (splitmix64's finaliser), vectorised."""
    import numpy as np

    with np.errstate(over="ignore"):   # the mix wraps around 2^64 by design
        z = np.atleast_1d(ids).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))).reshape(np.shape(ids))


class ItemsSource(Source):
    """The Python API: an iterable of arguments, each passed as one argument (or unpacked)."""

    def __init__(self, items: Iterable, star: bool = False):
        self.items = items if hasattr(items, "__len__") and hasattr(items, "__getitem__") else list(items)
        self.call = CALL_STAR if star else CALL_ONE
        if star and self.items and isinstance(self.items[0], dict):
            self.call = CALL_KEYWORDS

    def count(self) -> int:
        return len(self.items)

    def tasks(self) -> Iterator[Task]:
        return enumerate(self.items)

    def take(self, ids: Iterable[int]) -> Iterator[Task]:
        return ((i, self.items[i]) for i in ids)

    take_any = take


def parse_value(text: str) -> Any:
    """A CSV cell as int or float when it reads as a number, otherwise the string itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


class ParamsSource(Source):
    """--params FILE: .csv (header row), .jsonl (one object a line) or .json (a list of objects).

    Each row becomes the keyword arguments of one task.
    """

    call = CALL_KEYWORDS
    KINDS = (".csv", ".jsonl", ".json")

    def __init__(self, path: str):
        self.path = path
        self.kind = os.path.splitext(path)[1].lower()
        if self.kind not in self.KINDS:
            raise UsageError(f"params file {path!r}: unknown type {self.kind or '(none)'!r}; "
                             "use .csv with a header row, .jsonl or .json")

    def _lines(self) -> Iterator[str]:
        """The file's lines as text, each ending as in the file (csv wants that), a UTF-8 BOM
        dropped; raises UsageError naming the line that is not UTF-8."""
        try:
            f = open(self.path, "rb")
        except OSError as exc:
            raise UsageError(f"params file {self.path!r}: {exc.strerror}") from None
        with f:
            for lineno, line in enumerate(f, 1):
                try:
                    yield line.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise UsageError(f"params file {self.path!r}, line {lineno}: not UTF-8 (byte "
                                     f"{line[exc.start]:#04x} at column {exc.start + 1}): save it "
                                     "as UTF-8") from None

    def _rows(self) -> Iterator[tuple[int, dict]]:
        """(line number, row) pairs; raises UsageError naming the line of a bad row."""
        lines = self._lines()
        if self.kind == ".csv":
            yield from self._csv_rows(lines)
        elif self.kind == ".jsonl":
            for lineno, line in enumerate(lines, 1):
                if line.strip():
                    yield lineno, self._object(self._json(line, f"line {lineno}"), f"line {lineno}")
        else:
            rows = self._json("".join(lines), "the file")
            if not isinstance(rows, list):
                raise UsageError(f"params file {self.path!r}: expected a JSON list of objects")
            for i, row in enumerate(rows):
                yield i, self._object(row, f"item {i}")

    def _csv_rows(self, lines: Iterator[str]) -> Iterator[tuple[int, dict]]:
        import csv   # csv and json only where a params file is read (rank 0 mostly)

        csv.field_size_limit(CELL_LIMIT)   # a long cell is a value, not an error
        reader = csv.reader(lines)
        try:
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise UsageError(f"params file {self.path!r} is empty (a .csv needs a header row)")
            header = [h.strip() for h in header]
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise UsageError(f"params file {self.path!r}, line 1: column {twice[0]!r} appears "
                                 "more than once in the header: rename or drop one")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise UsageError(f"params file {self.path!r}, line {reader.line_num}: "
                                     f"{len(row)} values for {len(header)} columns {header}")
                yield reader.line_num, {k: parse_value(v) for k, v in zip(header, row)}
        except csv.Error as exc:
            raise UsageError(f"params file {self.path!r}, line {reader.line_num}: not a valid CSV row "
                             f"({exc})") from None

    def _json(self, text: str, where: str):
        import json

        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"params file {self.path!r}, {where}: not valid JSON ({exc})") from None

    def _object(self, row, where: str) -> dict:
        if not isinstance(row, dict):
            raise UsageError(f"params file {self.path!r}, {where}: not a JSON object")
        return row

    def count(self) -> int:
        n, columns = 0, None
        for lineno, row in self._rows():
            keys = sorted(row)
            if columns is None:
                columns = keys
            elif keys != columns:
                raise UsageError(f"params file {self.path!r}, line {lineno}: columns {keys} "
                                 f"differ from the first row's {columns}")
            n += 1
        return n

    def tasks(self) -> Iterator[Task]:
        return enumerate(row for _, row in self._rows())

    def describe(self, tid: int) -> str:
        return f"row {tid} of {self.path}"

    def fingerprint(self, digest: "hashlib._Hash") -> np.ndarray | None:
        """The file's bytes; a task's key is that of its line (.csv, .jsonl: a later run with
        the same line matches, wherever it moved). None for .json; for a .csv whose quoted
        values span lines the keys do not match the rows, and the caller drops them."""
        keys = []
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f):
                if line.endswith(b"\r\n"):   # the same rows with other line endings: the same list
                    line = line[:-2] + b"\n"
                if not lineno:
                    line = line.removeprefix(codecs.BOM_UTF8)
                digest.update(line)
                text = line.strip()
                if text and (lineno or self.kind == ".jsonl"):
                    keys.append(task_key(text))
        return key_array(keys) if self.kind != ".json" else None


def key_array(keys: list[int]) -> np.ndarray:
    """Task keys as the uint64 array the results file stores (numpy only when fingerprinting)."""
    import numpy as np

    return np.array(keys, dtype=np.uint64)


def task_key(text: bytes) -> int:
    """A stable 64-bit key of a task's arguments (Python's hash() differs between processes)."""
    import hashlib   # not at the top: only rank 0 keys tasks, and hashlib loads OpenSSL (~4 ms of
    # each rank's start-up); here it costs 0.12 us of a key's 0.5 us, beside a row's parsing
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def plain_ids(ids: Sequence[int]) -> Sequence[int]:
    """Task ids as ranks send them to each other: a range as it is, anything else as an int64
    array.array of Python ints (a numpy array would make every rank that unpickles it import
    numpy, ~60 ms of CPU each)."""
    if isinstance(ids, (range, array)):
        return ids
    if hasattr(ids, "astype"):   # numpy, on rank 0: its bytes as they are
        return array("q", ids.astype("int64", copy=False).tobytes())
    return array("q", ids)


def first_task(source: Source) -> Task | None:
    """The first task of a source, or None for an empty one."""
    return next(itertools.islice(source.tasks(), 1), None)
