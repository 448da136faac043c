"""Littlewood fractal: the roots of all polynomials with coefficients -1 or +1, as a hits grid.

This is the second seed workload of mtcmpi: compute-bound numpy tasks that each return a
fixed-shape array (a partial hits grid) which the caller sums. A task covers a contiguous
range of polynomial numbers, so the grids of any split of range(2**degree) add up to the
grid of the whole range, cell for cell.

Conventions (shared by the fast path ``hits`` and the slow ``reference_grid``):

* Polynomial number k (0 <= k < 2**degree) is
  ``z**degree + c[degree-1] * z**(degree-1) + ... + c[1] * z + c[0]`` where
  ``c[j] = -1`` if bit j of k is set and ``+1`` if it is clear (bit 0 is the constant term).
  So k = 0 is the all-plus polynomial and k = 2**degree - 1 the all-minus one.
* A root with ``abs(part) < EPS`` (1e-9) has that part set to exactly 0 before anything else,
  so real roots (imaginary part +-1e-17) and imaginary-axis roots (real part +-1e-17) are
  kept once, consistently.
* Roots with real >= 0 and imag >= 0 are kept and counted in cell
  ``(rint(re * size), rint(im * size))`` (round half to even), so ``grid[ix, iy]``: axis 0
  is the real part, axis 1 the imaginary part.
* The grid shape is ``(21 * size // 10 + 1, 3 * size // 2 + 1)``, i.e. re in [0, 2.1] and
  im in [0, 1.5]; roots falling outside are dropped (all roots have modulus < 2, so only a
  few with large imaginary part are lost).

``orbit_hits`` is the same grid for a quarter of the LAPACK work (eigvals is 97% of the time).
The set of these polynomials is closed under z -> -z and z -> 1/z: with p, it holds
``(-1)**degree p(-z)`` (roots -r) and ``z**degree p(1/z) / c[0]`` (roots 1/r), so it falls
into orbits of four polynomials (two for a few). One member of each orbit, its representative
(the member whose number has the smallest splitmix64 hash, so that representatives spread
evenly over range(2**degree)), gets its roots from eigvals; the other members' roots are
-r, 1/r and -1/r. Those agree with eigvals on the members themselves only to ~3e-14 (degree
16), not bit for bit, so a member with a derived root within TOL (1e-10) of a binning boundary
(a cell edge, or -EPS), and every member of an orbit whose roots crowd closer than SEP (1e-3)
(ill-conditioned), is computed directly: the grid stays equal cell for cell (checked
exhaustively against ``hits`` for every degree up to 18). ``orbit_hits(start, stop)`` covers
the orbits whose representative is in start..stop-1, so its grids over any split of
range(2**degree) add up to the whole grid, as for ``hits``; but one part is not ``hits`` of
the same part. Both take the same params rows.

Run ``python -m kernels.littlewood --help`` for the command line: write a params CSV for an
mtcmpi run, compute a grid in one process, render a grid as a PNG.
"""
from __future__ import annotations

import argparse
import csv
import sys
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

EPS = 1e-9        # |part| below this counts as exactly 0 (see module docstring)
BATCH = 4096      # companion matrices per numpy.linalg.eigvals call (bounds memory)
TOL = 1e-10       # orbit_hits: a derived root this close to a binning boundary is computed directly
SEP = 1e-3        # orbit_hits: an orbit whose roots come this close together is computed directly
CSV_FIELDS = ("start", "stop", "degree", "size")


def grid_shape(size: int) -> tuple[int, int]:
    """Shape of the hits grid for a given size: (real cells, imaginary cells)."""
    return 21 * size // 10 + 1, 3 * size // 2 + 1


def grid_size(shape: Sequence[int]) -> int:
    """The size whose grid has this shape (the inverse of grid_shape)."""
    guess = round((shape[0] - 1) * 10 / 21)
    for size in (guess - 1, guess, guess + 1):
        if size > 0 and grid_shape(size) == tuple(shape):
            return size
    raise ValueError(f"{tuple(shape)} is not the shape of a Littlewood hits grid")


def chunk(index: int, tasks: int, degree: int) -> range:
    """Polynomial numbers of task `index` when range(2**degree) is cut into `tasks` chunks."""
    if not 0 <= index < tasks:
        raise ValueError(f"task index {index} is not in range({tasks})")
    total = 2 ** degree
    return range(index * total // tasks, (index + 1) * total // tasks)


def companions(numbers: NDArray[np.int64], degree: int) -> NDArray[np.float64]:
    """Companion matrices, shape (n, degree, degree), laid out exactly as numpy.roots does."""
    powers = np.arange(degree - 1, -1, -1)            # first row holds z**(degree-1) .. z**0
    signs = 1.0 - 2.0 * ((numbers[:, None] >> powers) & 1)
    matrices = np.zeros((len(numbers), degree, degree))
    matrices[:, np.arange(1, degree), np.arange(degree - 1)] = 1.0
    matrices[:, 0, :] = -signs
    return matrices


def bin_roots(roots: NDArray[np.complex128], size: int) -> NDArray[np.int64]:
    """Hits grid of a flat array of roots (first quadrant only, EPS rule applied)."""
    re, im = np.real(roots), np.imag(roots)
    re = np.where(np.abs(re) < EPS, 0.0, re)
    im = np.where(np.abs(im) < EPS, 0.0, im)
    keep = (re >= 0) & (im >= 0)
    ix = np.rint(re[keep] * size).astype(np.int64)
    iy = np.rint(im[keep] * size).astype(np.int64)
    nx, ny = grid_shape(size)
    inside = (ix < nx) & (iy < ny)
    counts = np.bincount(ix[inside] * ny + iy[inside], minlength=nx * ny)
    return counts.reshape(nx, ny)


def batches(start: int, stop: int, degree: int, size: int) -> Iterator[NDArray[np.int64]]:
    """Polynomial numbers start..stop-1 in arrays of at most BATCH; ValueError for a bad range."""
    if not 0 <= start <= stop <= 2 ** degree or degree < 1 or size < 1:
        raise ValueError(f"bad range {start}..{stop} for degree {degree}, size {size}")
    for first in range(start, stop, BATCH):
        yield np.arange(first, min(first + BATCH, stop), dtype=np.int64)


def hits(start: int, stop: int, degree: int = 16, size: int = 200) -> NDArray[np.int64]:
    """Hits grid (int64, shape grid_shape(size)) of the roots of polynomials start..stop-1."""
    grid = np.zeros(grid_shape(size), dtype=np.int64)
    for numbers in batches(start, stop, degree, size):
        grid += bin_roots(np.linalg.eigvals(companions(numbers, degree)).ravel(), size)
    return grid


def orbit_hits(start: int, stop: int, degree: int = 16, size: int = 200) -> NDArray[np.int64]:
    """Hits grid of every polynomial in the orbits whose representative is in start..stop-1.

    Over range(2**degree) it equals hits(0, 2**degree), for a quarter of the eigvals calls."""
    grid = np.zeros(grid_shape(size), dtype=np.int64)
    for numbers in batches(start, stop, degree, size):
        grid += bin_roots(orbit_roots(numbers, degree, size), size)
    return grid


def negated(numbers: NDArray[np.int64], degree: int) -> NDArray[np.int64]:
    """Numbers of (-1)**degree p(-z), whose roots are -r: c[j] flips where degree - j is odd."""
    return numbers ^ sum(1 << j for j in range(degree) if (degree - j) % 2)


def reciprocal(numbers: NDArray[np.int64], degree: int) -> NDArray[np.int64]:
    """Numbers of z**degree p(1/z) / c[0], whose roots are 1/r: c[0] stays, c[j] -> c[0] c[degree-j]."""
    low = numbers & 1
    out = low.copy()
    for j in range(1, degree):
        out |= ((numbers >> (degree - j)) & 1) << j
    return out ^ (low * ((1 << degree) - 2))


def orbits(numbers: NDArray[np.int64], degree: int) -> tuple[NDArray[np.int64], ...]:
    """The representatives among numbers and their partners: (k, -r partner, 1/r, -1/r partner).

    The 1/r partner equals k or the -r partner for the few orbits of two."""
    neg, rec = negated(numbers, degree), reciprocal(numbers, degree)
    negrec = negated(rec, degree)
    key, *others = (scramble(m) for m in (numbers, neg, rec, negrec))
    own = (key < others[0]) & (key <= others[1]) & (key <= others[2])
    return numbers[own], neg[own], rec[own], negrec[own]


def scramble(numbers: NDArray[np.int64]) -> NDArray[np.uint64]:
    """The splitmix64 finalizer: one to one on 64-bit integers, with well-mixed order."""
    x = numbers.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def orbit_roots(numbers: NDArray[np.int64], degree: int, size: int) -> NDArray[np.complex128]:
    """Every root of the orbits of the representatives among numbers, as a flat array."""
    own, neg, rec, negrec = orbits(numbers, degree)
    roots = np.linalg.eigvals(companions(own, degree))
    every, four = np.ones(len(own), dtype=bool), (rec != own) & (rec != neg)
    crowded = crowding(roots) < SEP
    parts, direct = [roots.ravel()], []
    for members, derived, use in ((neg, -roots, every), (rec, 1 / roots, four), (negrec, -1 / roots, four)):
        redo = use & (crowded | near_boundary(derived, size).any(axis=1))
        parts.append(derived[use & ~redo].ravel())
        direct.append(members[redo])
    parts.append(np.linalg.eigvals(companions(np.concatenate(direct), degree)).ravel())
    return np.concatenate(parts)


def crowding(roots: NDArray[np.complex128]) -> NDArray[np.float64]:
    """Per row of roots, the smallest distance between two of them (inf for a single root)."""
    gaps = np.abs(roots[:, :, None] - roots[:, None, :])
    diagonal = np.arange(roots.shape[1])
    gaps[:, diagonal, diagonal] = np.inf
    return gaps.min(axis=(1, 2))


def near_boundary(roots: NDArray[np.complex128], size: int) -> NDArray[np.bool_]:
    """Which roots lie within TOL of a binning decision: a part at -EPS or at a cell edge."""
    def edge(part: NDArray[np.float64]) -> NDArray[np.bool_]:
        scaled = part * size
        return (np.abs(scaled - np.floor(scaled) - 0.5) < TOL * size) | (np.abs(part + EPS) < TOL)
    re, im = roots.real, roots.imag
    return (re > -EPS - TOL) & (im > -EPS - TOL) & (edge(re) | edge(im))


def task(index: int, degree: int = 16, size: int = 200, tasks: int = 64) -> NDArray[np.int64]:
    """Hits grid of the index-th of `tasks` contiguous chunks (for ``mtcmpi --count tasks``)."""
    numbers = chunk(index, tasks, degree)
    return hits(numbers.start, numbers.stop, degree, size)


def params(degree: int = 16, size: int = 200, tasks: int = 64) -> list[dict]:
    """One params row (start, stop, degree, size) per chunk, for ``hits`` or ``orbit_hits``."""
    rows = []
    for index in range(tasks):
        numbers = chunk(index, tasks, degree)
        rows.append({"start": numbers.start, "stop": numbers.stop, "degree": degree, "size": size})
    return rows


def reference_grid(degree: int, size: int) -> NDArray[np.int64]:
    """The slow reference: numpy.roots polynomial by polynomial, binned root by root."""
    grid = np.zeros(grid_shape(size), dtype=np.int64)
    for k in range(2 ** degree):
        coefficients = [1] + [-1 if k >> j & 1 else 1 for j in range(degree - 1, -1, -1)]
        for root in np.roots(coefficients):
            re, im = complex(root).real, complex(root).imag
            re, im = (0.0 if abs(re) < EPS else re), (0.0 if abs(im) < EPS else im)
            cell = (round(re * size), round(im * size))   # round() halves to even, as rint
            if re >= 0 and im >= 0 and cell[0] < grid.shape[0] and cell[1] < grid.shape[1]:
                grid[cell] += 1
    return grid


def render(grid: NDArray[np.integer], png_path: str, title: str | None = None) -> None:
    """Write a heatmap PNG of a hits grid, two pixels per cell, real axis horizontal.

    The colour of a cell is log(hits) / log(max hits) on the 'magma' colormap (its darkest
    15% cut off so that single hits stay visible); cells without hits are black.
    """
    import matplotlib    # imported here, so that tasks never pay for it

    grid = np.asarray(grid)
    size = grid_size(grid.shape)
    with np.errstate(divide="ignore"):
        shade = np.log(grid.T.astype(float)) / np.log(max(int(grid.max()), 2))
    magma = matplotlib.colormaps["magma"]
    cmap = matplotlib.colors.ListedColormap(magma(np.linspace(0.15, 1.0, 256)))
    fig, ax, bar_ax = _layout(*grid.shape)
    nx, ny = grid.shape
    image = ax.imshow(np.ma.masked_less(shade, 0.0), cmap=cmap, vmin=0.0, vmax=1.0,
                      origin="lower", interpolation="nearest",
                      extent=(-0.5 / size, (nx - 0.5) / size, -0.5 / size, (ny - 0.5) / size))
    title = title or f"Littlewood roots, size {size}, {int(grid.sum()):,} hits"
    _label(fig, ax, image, bar_ax, title)
    fig.savefig(png_path, dpi=100, facecolor="black")


def _layout(nx: int, ny: int):
    """A black figure with an image axes of exactly 2x2 pixels per cell and a colourbar axes.

    A bare Figure (no pyplot) draws with Agg and leaves the caller's backend alone.
    """
    from matplotlib.figure import Figure

    left, right, bottom, top, bar = 70, 110, 50, 40, 18
    width, height = left + 2 * nx + right, bottom + 2 * ny + top
    fig = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="black")
    ax = fig.add_axes((left / width, bottom / height, 2 * nx / width, 2 * ny / height))
    bar_ax = fig.add_axes(((left + 2 * nx + 20) / width, bottom / height, bar / width,
                           2 * ny / height))
    return fig, ax, bar_ax


def _label(fig, ax, image, bar_ax, title: str) -> None:
    """Light-on-dark axis labels, ticks, title and colourbar for render()."""
    ax.set_facecolor("black")
    ax.set_xlabel("Re(z)", color="white")
    ax.set_ylabel("Im(z)", color="white")
    ax.set_title(title, color="white")
    ax.tick_params(colors="white")
    bar = fig.colorbar(image, cax=bar_ax)
    bar.set_label("log(hits) / log(max hits)", color="white")
    bar.ax.tick_params(colors="white")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: --params CSV, --grid NPY (compute in one process), --render NPY --png PNG."""
    parser = argparse.ArgumentParser(prog="python -m kernels.littlewood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--degree", type=int, default=16)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=64, help="chunks for --params")
    parser.add_argument("--params", metavar="CSV", help="write params rows start,stop,degree,size")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--grid", metavar="NPY", help="compute the whole grid here, save as .npy")
    source.add_argument("--render", metavar="NPY", help="load a grid saved with numpy.save")
    parser.add_argument("--png", help="render the --grid or --render grid to this PNG")
    parser.add_argument("--title", help="PNG title (default: size and total hits)")
    args = parser.parse_args(argv)
    if not (args.params or args.grid or args.render):
        parser.error("give at least one of --params, --grid, --render")
    if args.png and not (args.grid or args.render):
        parser.error("--png needs --grid or --render")
    if args.params:
        _write_params(args.params, params(args.degree, args.size, args.tasks))
    if args.grid:
        grid = orbit_hits(0, 2 ** args.degree, args.degree, args.size)
        np.save(args.grid, grid)
    else:
        grid = np.load(args.render) if args.render else None
    if args.png:
        made = f"Littlewood roots, degree {args.degree}, size {args.size}" if args.grid else None
        render(grid, args.png, args.title or made)
    return 0


def _write_params(path: str, rows: list[dict]) -> None:
    """Write params rows as a CSV with header start,stop,degree,size."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
