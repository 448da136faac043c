"""Every rank must run the same code: the same Python, mtcmpi and task module on every node.

On a cluster the nodes see the software through a shared filesystem or a module system; a
node that mounts an older copy of the venv or of the task module would compute something else
without a word. So at start-up rank 0 broadcasts what it sees and every rank compares (one
broadcast and the error agreement, not a gather of 12,288 descriptions).
"""
from __future__ import annotations

import hashlib
import sys
from typing import Callable

from . import __version__
from .world import World


def what_runs(fn: Callable) -> dict[str, str]:
    """What this rank would run: Python and mtcmpi versions, the task module's file and hash."""
    seen = {"python": "%d.%d" % sys.version_info[:2], "mtcmpi": f"{__version__} ({__file__})"}
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    if path and module.__name__.split(".")[0] != "mtcmpi":   # mtcmpi: by its version
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()[:12]
        except OSError as exc:
            digest = f"unreadable: {exc.strerror}"
        seen[f"task module {module.__name__}"] = f"{path} (sha256 {digest})"
    return seen


def differences(mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """What differs, as 'key: mine vs theirs'; mtcmpi's file path alone may differ (mounts)."""
    out = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key, "missing"), theirs.get(key, "missing")
        if key == "mtcmpi":
            a, b = a.split(" (")[0], b.split(" (")[0]
        elif key.startswith("task module"):
            a, b = a.rsplit(" (", 1)[-1], b.rsplit(" (", 1)[-1]   # the content, wherever it lives
        if a != b:
            out.append(f"{key}: {mine.get(key, 'missing')} vs {theirs.get(key, 'missing')}")
    return out


def check_same_code(world: World, fn: Callable) -> None:
    """Collective: stop every rank (exit 2) if any rank runs other code than rank 0."""
    if world.size == 1:
        return
    mine = what_runs(fn)
    theirs = world.comm.bcast(mine if world.rank == 0 else None, root=0)
    found = differences(mine, theirs)
    count = world.comm.allreduce(int(bool(found)))
    error = None
    if found:
        error = (f"rank {world.rank} on {world.host} runs other code than rank 0 "
                 f"({'; '.join(found)}; {count} rank(s) differ): every node must see the same "
                 "venv and task module, e.g. on a shared filesystem (README: Running under a "
                 "batch system)")
    world.agree(error)
