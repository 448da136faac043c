"""Tasks for tests/test_startup.py, in a module that imports nothing but os and sys: the
modules a rank loaded are what those tests look at (a test module brings pytest and more)."""
from __future__ import annotations

import os
import sys

HEAVY = ("numpy", "h5py")   # no rank imports them without --out or costs
# nor these on a rank other than 0, which alone checks and fingerprints the tasks: each costs
# every rank milliseconds of CPU at start-up (dataclasses brings inspect, ast and dis; shutil
# bz2 and lzma; glob is for rank 0's look at the journals)
WORKER_HEAVY = HEAVY + ("dataclasses", "hashlib", "inspect", "shutil", "glob")


def without_heavy_modules(i: int) -> None:
    """A task that fails if its rank imported any of HEAVY before it (ranks > 0: WORKER_HEAVY)."""
    from mtcmpi.startup import launcher_rank

    loaded = [name for name in (WORKER_HEAVY if launcher_rank() else HEAVY) if name in sys.modules]
    if loaded:
        raise RuntimeError(f"imported at start-up: {', '.join(loaded)}")


def on_workers_without_heavy_modules(i: int) -> None:
    """without_heavy_modules on ranks > 0 only (rank 0 computed the costs, with numpy)."""
    from mtcmpi.startup import launcher_rank

    if launcher_rank():
        without_heavy_modules(i)


def cost_of(i: int) -> float:
    return float(i % 3)


def h5py_loaded(i: int) -> int:
    """A task: 1 if its rank has imported h5py by now, else 0."""
    return int("h5py" in sys.modules)


def plain_values(i: int) -> dict:
    """A task returning Python numbers and a string, and whether its rank has numpy by now;
    with EXIT_MARKS set, its rank writes there at exit which of numpy and h5py it loaded."""
    marks = os.environ.get("EXIT_MARKS")
    if marks and not hasattr(plain_values, "marked"):
        import atexit

        path = os.path.join(marks, str(os.getpid()))
        plain_values.marked = atexit.register(lambda: open(path, "w").write(
            " ".join(m for m in ("numpy", "h5py") if m in sys.modules)))
    if i % 2 and os.environ.get("FAIL_ODD"):
        raise ValueError("odd, this time")
    return {"i": i - 2, "x": i / 4, "big": 2**63 + i, "ok": i % 2 == 0, "s": "t" * i,
            "numpy": "numpy" in sys.modules}


def numpy_values(i: int) -> dict:
    """plain_values as numpy scalars: the journal's other way, to the same file."""
    import numpy as np

    v = plain_values(i)
    return {"i": np.int64(v["i"]), "x": np.float64(v["x"]), "big": np.uint64(v["big"]),
            "ok": np.bool_(v["ok"]), "s": np.bytes_(v["s"].encode()), "numpy": False}
