"""Every rank must run the same code: the same Python, mtcmpi and task module on every node.

On a cluster the nodes see the software through a shared filesystem or a module system; a
node that mounts an older copy of the venv or of the task module would compute something else
without a word. So at start-up rank 0 broadcasts what it sees (with its other start-up facts,
job.prepare) and every rank compares (not a gather of 12,288 descriptions). Only rank 0 reads and
hashes the task module: a rank that sees the same path with the same size and modification
time takes it as the same file (one stat), and a rank that imported it from rank 0's
broadcast (mtcmpi.startup) runs rank 0's code by construction (nothing to compare).
"""
from __future__ import annotations

import os
import sys
from typing import Callable

from . import __version__
from .startup import loaded_from_memory
from .world import World


def what_runs(fn: Callable, hashed: bool = True) -> dict[str, str]:
    """What this rank would run: Python and mtcmpi versions, the task module's file, its size
    and modification time, and (if hashed) its hash."""
    seen = {"python": "%d.%d" % sys.version_info[:2], "mtcmpi": f"{__version__} ({__file__})"}
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    if path and module.__name__.split(".")[0] != "mtcmpi":   # mtcmpi: by its version
        key = f"task module {module.__name__}"
        if loaded_from_memory(module):
            seen[key] = "rank 0's"
            return seen
        try:
            st = os.stat(path)
            stamp = f"{st.st_size} bytes, mtime {st.st_mtime_ns}"
            if hashed:   # rank 0 (and a rank whose stat differs): hashlib loads OpenSSL, ~4 ms
                import hashlib

                with open(path, "rb") as f:
                    stamp += f", sha256 {hashlib.sha256(f.read()).hexdigest()[:12]}"
        except OSError as exc:
            stamp = f"unreadable: {exc.strerror}"
        seen[key] = f"{path} ({stamp})"
    return seen


def differences(mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """What differs, as 'key: mine vs theirs'; mtcmpi's file path alone may differ (mounts)."""
    out = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key, "missing"), theirs.get(key, "missing")
        if key == "mtcmpi":
            a, b = a.split(" (")[0], b.split(" (")[0]
        elif key.startswith("task module"):
            if "rank 0's" in (a, b):   # imported from rank 0's broadcast: rank 0's code
                continue
            a, b = a.rsplit("sha256 ", 1)[-1], b.rsplit("sha256 ", 1)[-1]   # the content, wherever it lives
        if a != b:
            out.append(f"{key}: {mine.get(key, 'missing')} vs {theirs.get(key, 'missing')}")
    return out


def compared(world: World, fn: Callable, theirs: dict[str, str]) -> dict[str, str]:
    """This rank's view beside rank 0's (theirs): hashed only when the task module's path,
    size or modification time differ from rank 0's."""
    mine = what_runs(fn, hashed=False)
    key = next((k for k in mine if k.startswith("task module")), None)
    if world.rank and key and key in theirs and "rank 0's" not in mine[key]:
        if theirs[key].rsplit(", sha256", 1)[0] + ")" == mine[key]:   # same path, size and mtime
            mine[key] = theirs[key]
        else:
            mine = what_runs(fn)
    return mine


def code_error(world: World, fn: Callable, theirs: dict[str, str]) -> str | None:
    """This rank's error if it runs other code than rank 0, whose what_runs() is theirs; None
    if it runs the same. The caller agrees on it, and the lowest rank that differs speaks (a
    count of them would cost a collective more)."""
    found = differences(compared(world, fn, theirs), theirs) if world.rank else []
    if not found:
        return None
    return (f"rank {world.rank} on {world.host} runs other code than rank 0 "
            f"({'; '.join(found)}): every node must see the same venv and task module, e.g. on "
            "a shared filesystem (README: Running under a batch system)")
