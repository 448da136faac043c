"""The weak-scaling study: scaling/simulate.py's model on its own, its fit to a tiny real run of
scaling/weak.py, and scaling/weak_scaling.ipynb executed headless on that run's data, so neither
the model nor the notebook can rot."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT

SCALING = os.path.join(ROOT, "scaling")
sys.path.insert(0, SCALING)
import simulate  # noqa: E402

pytestmark = pytest.mark.timeout(300)
RANKS = "2,3"
TIME_SCALE = 0.002   # 54-66 ms tasks: each run takes under a second
TOLERANCE_PCT = 10   # model vs measured on runs this small (ms of noise on 0.6 s makespans)
PEER = "dask"        # the quickest of the paper's peers to start; without the 'peers' extra, a failed row


def run_script(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`python ARGS` in the repository; fails the test with its output if it fails."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, start_new_session=True)
    assert proc.returncode == 0, \
        f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def result(stdout: str) -> dict[str, float]:
    """The key=value pairs of the last line, which must be the RESULT line."""
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), last
    return {k: float(v) for k, v in (pair.split("=") for pair in last.split()[1:])}


def read_rows(path: str) -> list[dict]:
    """A CSV file's rows, as strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> str:
    """A directory with a tiny real weak.py run (2 and 3 ranks) and simulate.py's output for it."""
    out = str(tmp_path_factory.mktemp("study"))
    proc = run_script([os.path.join(SCALING, "weak.py"), "--ranks", RANKS, "--time-scale", str(TIME_SCALE),
                       "--policies", "static,dynamic,cost", "--peers", PEER, "--outdir", out], timeout=240)
    with open(os.path.join(out, "weak.out"), "w") as f:
        f.write(proc.stdout)
    proc = run_script([os.path.join(SCALING, "simulate.py"), "--measured",
                       os.path.join(out, "weak.csv"), "--quick"], timeout=240)
    with open(os.path.join(out, "simulate.out"), "w") as f:
        f.write(proc.stdout)
    return out


def test_random_order_cannot_reach_the_target_but_longest_first_can():
    """The issue's pure-scheduling figures at 12,288 cores: random-order self-scheduling stays
    near 0.946 however cheap the master, longest first reaches 0.998 (0.9999 if the last
    rounds went on demand, which the engine trades for short tasks: see simulate.py)."""
    cluster = simulate.Machine(service=simulate.SERVICE)
    eff = {name: simulate.prediction(simulate.POLICIES[name], 12288, 1.0, cluster, 10.6)["eff_engine"]
           for name in ("dynamic", "cost")}
    assert 0.93 < eff["dynamic"] < 0.95
    assert eff["cost"] > 0.998


def test_model_follows_the_engine_rules_on_a_small_case():
    """Two workers, four 1 s tasks, no latency: each worker runs two tasks back to back; a
    master that takes 0.5 s per answer delays the second worker by the answers queued before
    its own when the first round goes by request; the engine's scattered first round and
    ask-ahead hide them behind the first tasks."""
    work = np.ones(4)
    fast = simulate.Machine(service=0.0, latency=0.0, overhead=0.0, ready=0.0)
    engine = simulate.POLICIES["dynamic"]
    assert simulate.self_schedule(work, 3, engine, fast) == [2.0, 2.0]
    slow = simulate.Machine(service=0.5, latency=0.0, overhead=0.0, ready=0.0)
    by_request = simulate.Plan("requests", preassigned=False, far=False)
    assert simulate.self_schedule(work, 3, by_request, slow)[1] == pytest.approx(3.0)
    assert simulate.self_schedule(work, 3, engine, slow) == pytest.approx([2.0, 2.0])


def test_every_variant_runs_every_task_once():
    """With free messages no worker ever waits, so the workers' end times add up to the work
    exactly when every task ran once; static partitions end no earlier than the mean load."""
    free = simulate.Machine(service=0.0, latency=0.0, overhead=0.0, ready=0.0, item=0.0)
    for plan in simulate.VARIANTS:
        workers = simulate.workers_of(plan, 301)
        work = simulate.workload(10 * workers, 0.01, 0, exact=False)
        if plan.schedule == "static":
            assert simulate.makespan(work, 301, plan, free) >= work.sum() / workers, plan.name
        else:
            assert sum(simulate.self_schedule(work, 301, plan, free)) == pytest.approx(work.sum()), plan.name


def test_without_measured_runs_the_defaults_still_predict(tmp_path):
    """No weak.csv: the model uses its defaults, writes simulate.csv and ends with RESULT."""
    proc = run_script([os.path.join(SCALING, "simulate.py"), "--measured", "", "--quick",
                       "--outdir", str(tmp_path)], timeout=240)
    got = result(proc.stdout)
    assert all(0 < got[k] <= 1 for k in ("eff_static", "eff_dynamic", "eff_cost",
                                         "eff_cost_with_paper_startup"))
    # the model of self-scheduling at 12,288 cores meets the paper's measurement (read off its
    # plots to +-0.01; the model leaves out the start-up, which the paper's figure spreads in)
    assert abs(got["eff_dynamic"] - got["paper_dynamic"]) < 0.03
    rows = read_rows(tmp_path / "simulate.csv")
    assert {r["scenario"] for r in rows} >= {"cluster", "sweep", "shortest"}
    assert "here" not in {r["scenario"] for r in rows}


# `alone`: whichever of the tests that use `study` builds it on its xdist worker, the runs
# test_fit_to_measured_runs compares with the model are measured with no other test beside them
@pytest.mark.e2e
@pytest.mark.alone
def test_fit_to_measured_runs(study):
    """Every measured run has its modelled twin within TOLERANCE_PCT, and RESULT parses."""
    with open(os.path.join(study, "simulate.out")) as f:
        got = result(f.read())
    assert all(0 < got[k] <= 1 for k in ("eff_static", "eff_dynamic", "eff_cost"))
    assert got["eff_cost"] > got["eff_dynamic"]
    here = [r for r in read_rows(os.path.join(study, "simulate.csv")) if r["scenario"] == "here"]
    assert {(int(r["ranks"]), r["policy"]) for r in here} == {
        (n, p) for n in (2, 3) for p in ("static", "dynamic", "cost")}
    for r in here:
        assert abs(float(r["error_pct"])) < TOLERANCE_PCT, r


@pytest.mark.e2e
@pytest.mark.alone
def test_notebook_draws_its_figures(study, monkeypatch):
    """The notebook runs headless on the study's data and shows its five figures."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(os.path.join(SCALING, "weak_scaling.ipynb"), as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells), "commit the notebook with outputs cleared"
    monkeypatch.setenv("MTCMPI_STUDY_DIR", study)   # the kernel inherits it
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": SCALING}}).execute()
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 5


@pytest.mark.e2e
@pytest.mark.alone
def test_peers_run_beside_mtcmpi_or_say_why_not(study):
    """weak.py --peers: the peer has a row at every rank count, measured or with its error, and
    the RESULT line compares start-up and wall efficiency with the peers."""
    rows = [r for r in read_rows(os.path.join(study, "weak.csv")) if r["policy"] == PEER]
    assert sorted(int(r["ranks"]) for r in rows) == [2, 3]
    for r in rows:
        assert r["error"] or 0 < float(r["eff_engine"]) <= 1.05, r
    with open(os.path.join(study, "weak.out")) as f:
        got = result(f.read())
    assert got["ranks"] == 3 and 0 < got["eff_wall_cost"] <= 1
    assert all(r["error"] for r in rows) or 0 < got["best_peer_eff_wall"] <= 1
