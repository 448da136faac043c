"""Which ranks ran a parallel task (groups.py), as the journal and the results file keep it.

A rank's TaskLog.groups and each journal frame's "members" field hold, for the tasks of more
than one rank it led, task id -> (member ranks, their hosts). The results file keeps them in
/groups (written by rank 0: strings), one row per such task: task, members as ranges ('1-4,7';
the first is the row's rank) and hosts (one per member, comma-separated); /tasks' field ranks
counts the members (1 for a one-rank task). Reading needs h5py only, not MPI (report, plot).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # imported where used: only the ranks that write the file load h5py (numpy too,
    import h5py     # unless their tasks return arrays: the journal imports this module for FIELD)
    import numpy as np

FIELD = "members"   # the journal frame's field
Group = tuple[list[int], list[str]]   # (member ranks, their hosts)


def members_text(members: list[int]) -> str:
    """A task's ranks as ranges, as /groups stores them: '1-4,7'."""
    out, i = [], 0
    while i < len(members):
        j = i
        while j + 1 < len(members) and members[j + 1] == members[j] + 1:
            j += 1
        out.append(str(members[i]) if i == j else f"{members[i]}-{members[j]}")
        i = j + 1
    return ",".join(out)


def members_of(text: str) -> list[int]:
    """The ranks of members_text(ranks)."""
    ranks: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        ranks += range(int(lo), int(hi or lo) + 1)
    return ranks


def as_text(group: Group) -> tuple[str, str]:
    """A /groups row's (members, hosts) of a group as the log holds it."""
    members, hosts = group
    return members_text(members), ",".join(hosts)


def sizes(groups: dict[int, Group], ids: Any) -> np.ndarray:
    """/tasks' field ranks of these task ids: 1, or the size of a parallel task's group."""
    import numpy as np

    if not groups:   # a run of one-rank tasks: no loop over millions of ids
        return np.ones(len(ids), np.int16)
    return np.array([len(groups[t][0]) if t in groups else 1 for t in np.asarray(ids).tolist()],
                    np.int16)


def of_frame(meta: dict) -> dict[int, Group]:
    """A journal frame's groups (none in a frame of one-rank tasks)."""
    return meta.get(FIELD, {})


def read_groups(f: h5py.File) -> dict[int, tuple[str, str]]:
    """An open results file's /groups as {task id: (members, hosts)}; empty without parallel tasks."""
    if "groups" not in f:
        return {}
    table = f["groups"][:]
    text = [[v.decode() if isinstance(v, bytes) else v for v in table[name]] for name in ("members", "hosts")]
    return {int(t): (m, h) for t, m, h in zip(table["task"], *text)}


def write_groups(f: h5py.File, groups: dict[int, tuple[str, str]]) -> None:
    """/groups, one row per task in id order (rank 0, file opened without MPI-IO: strings)."""
    import numpy as np

    from .values import TEXT

    ids = sorted(groups)
    table = np.array([(t, *groups[t]) for t in ids],
                     dtype=[("task", np.int64), ("members", TEXT), ("hosts", TEXT)])
    f.create_dataset("groups", data=table)
