"""Weak scaling on the sleep benchmark of Lunacek et al. (IEEE Cluster 2013), with the peers.

    python scaling/weak.py [--quick] [--ranks 2,4,...] [--time-scale 0.01] [--outdir DIR]
                           [--peers futures,ipyparallel,celery,dask]

Every working rank gets 10 tasks (--tasks-per-worker); task i sleeps uniform(27, 33) x
--time-scale seconds (kernels.sleep.duration(i, scale, seed): 0.27-0.33 s by default, 1.0 is
the paper). Policies: static (blocks, rank 0 works too), dynamic and guided (rank 0 is the
master), cost (dynamic handing out the longest tasks first, costs from kernels.sleep:duration)
and futures, mpi4py.futures' MPIPoolExecutor.map in the same run (the peer). The four mtcmpi
policies share one launch per rank count (each writes its own results file with --out); the
peer has its own launch. --peers adds the paper's other peers (scaling/peers.py, the 'peers'
extra), each with ranks - 1 workers: ipyparallel (rows ipp_direct: static, ipp_lb: dynamic),
celery (a Redis broker started and stopped by the harness) and dask (dask-mpi); futures in
--peers is the same as in --policies. A peer that cannot start gets a row with its error.

Times, per run: start-up = launch until every rank is ready (one launch serves the mtcmpi
policies, so their rows share its figure); engine = first task handed out until the last
result is recorded in its rank's log (the last task end, from the results file; the peer:
until map() has returned the last result to rank 0); wrap-up = from there until every rank
has had its last answer and flushed its journal; store = writing the results file (the peer
keeps results in memory, as the paper's code did). Efficiency, with ideal = sum of durations /
working ranks: the paper's = ideal / (start-up + engine + wrap-up + store), the whole wall
time; engine-only = ideal / engine.

Fair by construction: every tool runs the same seeded tasks on the same number of working
ranks, with its start-up counted from the same launch timestamp; mtcmpi stores every result
durably (journal, then the results file) and that time counts, while the peers keep results in
memory. The ranks run scaling/weak_ranks.py, not this harness (which no futures worker reads).
mtcmpi and kernels/ are byte-compiled before the first launch, as an installed package
is (mpi4py's and numpy's modules are), so no rank compiles them from source (this machine sets
PYTHONDONTWRITEBYTECODE). The mtcmpi launch also prints its start-up by phase (--profile-startup's
median and maximum over ranks).

--repeat N launches everything N times per rank count, the tools taking turns to go first; the
table, files and RESULT keep, per tool, the run with the median whole-wall efficiency.

Writes DIR/weak.csv and DIR/weak.h5 (/runs, the same table), DIR/weak.png (efficiency against
ranks with the paper's curves) and DIR/runs/<policy>-<ranks>.h5. Last line:
RESULT ranks=<largest> startup_ratio=<mtcmpi/futures> eff_wall_cost=... best_peer_eff_wall=...
eff_static=... eff_dynamic=... (engine-only per policy and peer), at the largest rank count.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANKS = os.path.join(ROOT, "scaling", "weak_ranks.py")   # what the ranks run (not this harness)

PAPER = os.path.join(ROOT, "scaling", "reference", "lunacek2013_weak_scaling.csv")  # the paper's figures
MTCMPI_POLICIES = ("static", "dynamic", "guided", "cost")
POLICIES = MTCMPI_POLICIES + ("futures",)
COLUMNS = ("ranks", "workers", "policy", "tasks", "time_scale", "seed", "mean_task_s", "ideal_s",
           "startup_s", "engine_s", "wrap_s", "store_s", "eff_paper", "eff_engine", "results_file",
           "error")


def peer_rows() -> tuple[str, ...]:
    """futures and the rows of the other peers (scaling/peers.py: imported by the harness only,
    not by the ranks it starts)."""
    from peers import PEERS, ROWS

    return ("futures",) + tuple(r for p in PEERS for r in ROWS[p])


def row(ranks: int, run: dict, per_worker: int, scale: float, seed: int) -> dict:
    """One line of the table from a child's JSON (a peer that failed: its error, no figures)."""
    from kernels.sleep import durations

    if "error" in run:
        nan = float("nan")
        return {**dict.fromkeys(COLUMNS, nan), "ranks": ranks, "workers": ranks - 1,
                "policy": run["policy"], "tasks": (ranks - 1) * per_worker, "time_scale": scale,
                "seed": seed, "results_file": "", "error": run["error"]}
    workers = run["workers"]
    took = durations(workers * per_worker, scale, seed)
    ideal = sum(took) / workers
    if run["ok"] != len(took):
        raise RuntimeError(f"{run['policy']} at {ranks} ranks finished {run['ok']} of {len(took)} tasks")
    return {"ranks": ranks, "workers": workers, "policy": run["policy"], "tasks": len(took),
            "time_scale": scale, "seed": seed, "mean_task_s": sum(took) / len(took), "ideal_s": ideal,
            "startup_s": run["startup"], "engine_s": run["engine"], "wrap_s": run["wrap"],
            "store_s": run["store"],
            "eff_paper": ideal / (run["startup"] + run["engine"] + run["wrap"] + run["store"]),
            "eff_engine": ideal / run["engine"],
            "results_file": run["results_file"], "error": ""}


def measure(ranks: int, policies: list[str], args: argparse.Namespace, turn: int = 0) -> list[dict]:
    """Every policy at one rank count: one launch for mtcmpi's, one for each peer; turn rotates
    which goes first, so a repetition's drift in the machine's load does not favour one tool."""
    from _mpirun import last_json, mpirun

    common = [str(args.tasks_per_worker), str(args.time_scale), str(args.seed)]
    ours = [p for p in policies if p in MTCMPI_POLICIES]

    def mtcmpi() -> list[dict]:
        out = mpirun(ranks, [RANKS, ",".join(ours), *common, os.path.abspath(args.outdir)],
                     timeout=900).stdout
        got = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        phases = next((r["startup_phases"] for r in got if r.get("startup_phases")), {})
        print(f"{ranks:5d} mtcmpi start-up by phase, median/max over ranks (s): "
              + ", ".join(f"{k} {m:.2f}/{x:.2f}" for k, (m, x) in phases.items()), flush=True)
        return got

    def futures() -> list[dict]:
        return [last_json(mpirun(ranks, ["-m", "mpi4py.futures", RANKS, "futures", *common],
                                 timeout=900).stdout)]

    def peer(name: str) -> Callable[[], list[dict]]:
        from peers import run_peer

        return lambda: run_peer(name, ranks - 1, ["weak", *common])

    launches = ([mtcmpi] if ours else []) + ([futures] if "futures" in policies else []) + [
        peer(name) for name in args.peer_list]
    turn %= max(1, len(launches))
    runs = [run for launch in launches[turn:] + launches[:turn] for run in launch()]
    return [row(ranks, run, args.tasks_per_worker, args.time_scale, args.seed) for run in runs]


def median_runs(rows: list[dict]) -> list[dict]:
    """Per rank count and policy, the repetition with the median whole-wall efficiency (a run
    that happened, not a mix of several); a policy that failed every time keeps its error."""
    out = []
    for key in dict.fromkeys((r["ranks"], r["policy"]) for r in rows):
        mine = [r for r in rows if (r["ranks"], r["policy"]) == key]
        ok = sorted((r for r in mine if not r["error"]), key=lambda r: r["eff_paper"])
        out.append(ok[len(ok) // 2] if ok else mine[0])
    return out


def save(rows: list[dict], outdir: str) -> None:
    """weak.csv and weak.h5 (/runs) with the same columns."""
    import h5py
    import numpy as np

    with open(os.path.join(outdir, "weak.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    kinds = {"policy": "S12", "results_file": "S64", "error": "S300"}
    table = np.array([tuple(r[c] for c in COLUMNS) for r in rows],
                     dtype=[(c, kinds.get(c, "i8" if c in ("ranks", "workers", "tasks", "seed") else "f8"))
                            for c in COLUMNS])
    with h5py.File(os.path.join(outdir, "weak.h5"), "w") as f:
        f.create_dataset("runs", data=table)


def plot(rows: list[dict], outdir: str) -> str:
    """Efficiency against ranks per policy (engine-only solid, with start-up dashed) and the
    paper's mpi4py curves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for policy in POLICIES + peer_rows()[1:]:
        mine = sorted((r["ranks"], r["eff_engine"], r["eff_paper"]) for r in rows if r["policy"] == policy)
        if mine:
            line, = ax.plot([m[0] for m in mine], [m[1] for m in mine], "o-", label=f"{policy} (engine)")
            ax.plot([m[0] for m in mine], [m[2] for m in mine], "--", color=line.get_color(), alpha=0.6)
    if os.path.exists(PAPER):
        with open(PAPER) as f:
            paper = list(csv.DictReader(line for line in f if not line.startswith("#")))
        for key, label in (("mpi_static_eff", "paper: mpi4py static"), ("mpi_dynamic_eff", "paper: mpi4py dynamic")):
            ax.plot([int(p["cores"]) for p in paper], [float(p[key]) for p in paper], "s:", color="grey",
                    alpha=0.8, label=label, markersize=4, markerfacecolor="white" if "static" in key else "grey")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ranks (cores)")
    ax.set_ylabel("efficiency = ideal / wall")
    ax.set_ylim(0, 1.02)   # from 0: with start-up, efficiency on a full node here is well below 0.5
    ax.set_title("Weak scaling, sleep benchmark (dashed: with start-up)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    path = os.path.join(outdir, "weak.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 and 32 ranks only (under 50 s)")
    parser.add_argument("--ranks", default="2,4,8,16,32,64,128", help="comma-separated rank counts")
    parser.add_argument("--tasks-per-worker", type=int, default=10)
    parser.add_argument("--time-scale", type=float, default=0.01, help="1.0 = the paper's 27-33 s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="repetitions per rank count, tools "
                        "taking turns to go first; the table and RESULT keep each tool's median run")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--peers", default="", help="the paper's peers beside mtcmpi, of "
                        "futures,ipyparallel,celery,dask (needs the 'peers' extra)")
    parser.add_argument("--outdir", default=os.path.join(ROOT, "scaling", "out", "weak"))
    args = parser.parse_args()
    policies = args.policies.split(",")
    unknown = set(policies) - set(POLICIES)
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}; choose from {','.join(POLICIES)}")
    from peers import PEERS

    peers = [p for p in args.peers.split(",") if p]
    if set(peers) - {"futures", *PEERS}:
        parser.error(f"unknown peers {sorted(set(peers) - {'futures', *PEERS})}; choose from "
                     f"futures,{','.join(PEERS)}")
    policies += ["futures"] if "futures" in peers and "futures" not in policies else []
    args.peer_list = [p for p in peers if p != "futures"]
    from startup import compile_sources

    compile_sources()   # as installed: no rank compiles mtcmpi's modules from source
    ranks = [8, 32] if args.quick else [int(r) for r in args.ranks.split(",")]
    os.makedirs(os.path.join(args.outdir, "runs"), exist_ok=True)
    rows: list[dict] = []
    print(f"{'ranks':>5} {'policy':10} {'tasks':>6} {'start-up':>9} {'engine':>8} {'wrap-up':>8} "
          f"{'store':>7} {'eff(paper)':>10} {'eff(engine)':>11}", flush=True)
    top = max(ranks)
    pairs: list[float] = []   # at the largest rank count: cost minus the best peer, per repetition
    for n in ranks:
        for turn in range(args.repeat):
            done = measure(n, policies, args, turn)
            rows += done
            if n == top:
                pairs += lead(done)
            show(done)
    rows = median_runs(rows)
    if args.repeat > 1:
        print(f"median of {args.repeat} repetitions (by whole-wall efficiency) per rank count and tool:")
        show([r for r in rows if not r["error"]])
    save(rows, args.outdir)
    print(f"table: {os.path.join(args.outdir, 'weak.csv')} (and weak.h5); plot: {plot(rows, args.outdir)}")
    lines, fields = verdict([r for r in rows if r["ranks"] == top])
    print("\n".join(lines))
    if len(pairs) > 1:   # the median runs above are one draw each; this is every repetition's
        ahead, middle = sum(d >= 0 for d in pairs), sorted(pairs)[len(pairs) // 2]
        print(f"  repetition by repetition: cost ahead of the best peer in {ahead} of {len(pairs)} "
              f"(lead: median {middle:+.3f}, from {min(pairs):+.3f} to {max(pairs):+.3f})")
    effs = " ".join(f"eff_{r['policy']}={r['eff_engine']:.4f}" for r in rows if r["ranks"] == top)
    print(f"RESULT ranks={top} {fields} {effs}")


def show(rows: list[dict]) -> None:
    """Print one table line per run (a peer that failed: its error)."""
    for r in rows:
        n = r["ranks"]
        if r["error"]:
            print(f"{n:5d} {r['policy']:10} failed to start: {r['error']}", flush=True)
        else:
            print(f"{n:5d} {r['policy']:10} {r['tasks']:6d} {r['startup_s']:8.2f}s {r['engine_s']:7.3f}s "
                  f"{r['wrap_s']:7.3f}s {r['store_s']:6.3f}s {r['eff_paper']:10.3f} {r['eff_engine']:11.3f}",
                  flush=True)


def lead(rows: list[dict]) -> list[float]:
    """One repetition's cost-ordered wall efficiency minus the best peer's ([] without both)."""
    by = {r["policy"]: r["eff_paper"] for r in rows if not r["error"]}
    peers = [by[p] for p in peer_rows() if p in by]
    return [by["cost"] - max(peers)] if "cost" in by and peers else []


def verdict(rows: list[dict]) -> tuple[list[str], str]:
    """The issue's targets at one rank count (lines), and the RESULT fields startup_ratio,
    eff_wall_cost and best_peer_eff_wall. A peer that failed to start counts as beaten."""
    by = {r["policy"]: r for r in rows if not r["error"]}
    peers = [by[p] for p in peer_rows() if p in by]
    nan, lines = float("nan"), []
    ours = next((by[p] for p in MTCMPI_POLICIES if p in by), None)
    ratio = ours["startup_s"] / by["futures"]["startup_s"] if ours and "futures" in by else nan
    cost = by["cost"]["eff_paper"] if "cost" in by else nan
    best_wall = max((p["eff_paper"] for p in peers), default=nan)
    best_engine = max((p["eff_engine"] for p in peers), default=nan)
    if peers:
        lines.append(f"targets: start-up mtcmpi/futures {ratio:.2f} (<= 1.1); cost-ordered wall "
                     f"efficiency {cost:.3f} vs best peer {best_wall:.3f} "
                     f"({'met' if cost >= best_wall else 'NOT met'})")
        for name in ("dynamic", "guided", "cost"):
            if name in by:
                met = by[name]["eff_engine"] >= best_engine
                lines.append(f"  engine efficiency {name} {by[name]['eff_engine']:.3f} vs best peer "
                             f"{best_engine:.3f} ({'met' if met else 'NOT met'})")
    failed = [r["policy"] for r in rows if r["error"]]
    if failed:
        lines.append(f"  failed to start: {', '.join(failed)}")
    return lines, f"startup_ratio={ratio:.3f} eff_wall_cost={cost:.4f} best_peer_eff_wall={best_wall:.4f}"


if __name__ == "__main__":
    main()
