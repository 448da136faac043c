"""Helpers for tests under mpiexec."""
from mpi4py import MPI

from mtcmpi.errors import exception_line

comm = MPI.COMM_WORLD


def on_rank0(check) -> None:
    """Run check() on rank 0 and fail on every rank if it fails, so no rank is left waiting
    in the next collective (a plain assert on rank 0 alone would deadlock the suite)."""
    error = None
    if comm.rank == 0:
        try:
            check()
        except Exception as exc:   # noqa: BLE001 - re-raised on every rank below
            error = exception_line(exc)
    error = comm.bcast(error)
    assert error is None, error


def shared_tmp(tmp_path_factory, name: str) -> str:
    """One directory for all ranks (rank 0's), for files every rank opens."""
    return comm.bcast(str(tmp_path_factory.mktemp(name)) if comm.rank == 0 else None)
