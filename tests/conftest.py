"""Shared test setup: the MPI suites in tests/mpi run only under mpiexec (scripts/test does both)."""
import os

collect_ignore = [] if os.environ.get("OMPI_COMM_WORLD_SIZE") else ["mpi"]
