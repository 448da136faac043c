"""The Littlewood picture as one pipeline: split into chunks -> hits of each chunk -> sum -> PNG.

    mpirun -n 8 python -m mtcmpi pipeline examples/lw_pipeline.py --out lw.h5
    LW_DEGREE=12 LW_SIZE=100 LW_TASKS=4 python -m mtcmpi pipeline examples/lw_pipeline.py --dry-run

Settings come from the environment: LW_DEGREE (16), LW_SIZE (200), LW_TASKS (8 chunks), LW_DIR
(lw/, where every file goes). lw/grid.npy equals `python -m kernels.littlewood --degree D --size S
--grid grid.npy` cell for cell (orbit_hits grids of any split add up to the whole grid). Run from
the project root (or with it on PYTHONPATH), so that `kernels` imports on every rank.
"""
import json
import os

import numpy as np

from kernels import littlewood
from mtcmpi.pipeline import merge, split, transform

DEGREE = int(os.environ.get("LW_DEGREE", 16))
SIZE = int(os.environ.get("LW_SIZE", 200))
TASKS = int(os.environ.get("LW_TASKS", 8))
DIR = os.environ.get("LW_DIR", "lw")


def write_chunks(_: None, outputs: list[str]) -> None:
    """One JSON params row (start, stop, degree, size) per chunk file."""
    for path, row in zip(outputs, littlewood.params(DEGREE, SIZE, len(outputs))):
        with open(path, "w") as f:
            json.dump(row, f)


def chunk_hits(chunk: str, grid: str) -> None:
    """The hits grid of one chunk of polynomials."""
    with open(chunk) as f:
        np.save(grid, littlewood.orbit_hits(**json.load(f)))


def add_grids(grids: list[str], total: str) -> None:
    """The sum of the chunks' grids."""
    np.save(total, sum(np.load(g) for g in grids))


def draw(grid: str, png: str) -> None:
    littlewood.render(np.load(grid), png, f"Littlewood roots, degree {DEGREE}, size {SIZE}")


chunks = split("chunks", input=None, output=[f"{DIR}/chunk{i:04d}.json" for i in range(TASKS)],
               run=write_chunks)
hits = transform("hits", input=chunks, output="{.}.npy", run=chunk_hits)
grid = merge("sum", input=hits, output=f"{DIR}/grid.npy", run=add_grids)
png = transform("png", input=grid, output=f"{DIR}/littlewood{DEGREE}.png", run=draw)
