"""Task functions of parallel-task tests (importable as tests.tasks_for_groups:NAME)."""
import os
import socket


def total(x, comm):
    """Sum of x + rank over the task's ranks, with the group's size and world ranks (root only)."""
    from mpi4py import MPI

    s = comm.allreduce(x + comm.rank)
    world = comm.allgather(MPI.COMM_WORLD.Get_rank())
    return {"sum": s, "size": comm.size, "first": world[0], "last": world[-1]}


def sized(x, nprocs, comm):
    """A params-file task whose row names its own size."""
    return comm.allreduce(1) * 1000 + x


def member_fails(x, comm):
    """Fails on the last rank of its group, after the group's collective, when x is odd."""
    s = comm.allreduce(x)
    if x % 2 and comm.rank == comm.size - 1:
        raise ValueError(f"x={x} fails on group rank {comm.rank}")
    return s


def root_fails(x, comm):
    comm.Barrier()
    if comm.rank == 0:
        raise KeyError("root")
    return x


def no_comm(x):
    return x


def ranks_of(x):
    """--ranks module:function: task x takes 1 + x % 3 ranks."""
    return 1 + x % 3


def where(x, comm):
    return {"pid": os.getpid(), "host": socket.gethostname()}


def nap(x, k, comm):
    """A quarter-second task whose value needs the whole group."""
    import time

    time.sleep(0.25)
    return comm.allreduce(x) * 10 + comm.size


def flaky(x, dir, comm):
    """Fails on its first try (on the root, after the group's barrier), works on the second."""
    comm.Barrier()
    if comm.rank == 0:
        mark = os.path.join(dir, f"tried-{x}")
        if not os.path.exists(mark):
            open(mark, "w").close()
            raise RuntimeError(f"first try of {x}")
    return x


def raises_early(x, comm):
    """Task 1 raises on its last rank before the collective the others wait in."""
    if x == 1 and comm.rank == comm.size - 1:
        raise ValueError("left before the allreduce")
    return comm.allreduce(x)


def commission(x, comm):
    """A parameter called comm that is not a communicator: a column of the params file."""
    return x * comm
