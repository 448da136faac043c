"""Packaging for mtcmpi: a many-task computing framework for MPI in Python."""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="mtcmpi",
    version="0.1.0",
    description="Many-task computing on MPI: master/worker engine, parallel-HDF5 results, resume",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.10",
    packages=find_packages(include=["mtcmpi", "mtcmpi.*", "kernels"]),
    install_requires=["mpi4py>=3.1", "numpy", "h5py", "tqdm"],
    extras_require={
        "plot": ["matplotlib"],
        "test": ["pytest", "pytest-mpi", "pytest-timeout", "pytest-xdist"],   # xdist: scripts/test runs tests side by side
        "study": ["matplotlib", "nbclient", "nbformat", "ipykernel"],   # scaling/weak_scaling.ipynb
        "pool": ["pyzmq>=22", "cloudpickle"],        # mtcmpi.connect() and `mtcmpi serve`
        # the peers the benchmarks measure against: scaling/pools.py, scaling/graphs.py
        "peers": ["ipyparallel", "dask[distributed]", "dask-mpi", "celery[redis]"],   # + weak.py --peers
    },
    data_files=[("share/mtcmpi/jobscripts", glob("jobscripts/*"))],   # mtcmpi jobscript's templates
    entry_points={"console_scripts": ["mtcmpi = mtcmpi.cli:main"]},
)
