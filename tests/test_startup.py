"""Start-up: the profile a user can print, the cheap same-code check and the import broadcast."""
from __future__ import annotations

import math
import os
import sys

import pytest

from mtcmpi import startup
from tests.helpers import mtcmpi, run

pytestmark = pytest.mark.timeout(120)


def from_memory(i: int) -> int:
    """A task: 1 if this rank imported this module from rank 0's broadcast, else 0."""
    return int(startup.loaded_from_memory(sys.modules[__name__]))


def slack_now(i: int = 0) -> int:
    """A task: its rank's timer slack now (ns); called here, this process's."""
    with open(startup.SLACK_FILE) as f:
        return int(f.read())


def read(path) -> dict[int, int]:
    """{rank: value} of a results file whose tasks each ran on a different rank."""
    import h5py   # here, not at the top: the ranks import this module as their task module

    with h5py.File(path) as f:
        return dict(zip(f["tasks"]["rank"].tolist(), f["results"]["value"][:].tolist()))


def test_phases_add_up_to_launch_until_the_first_task(monkeypatch):
    """The phases cover the timeline without gaps or overlaps, with MPI init apart."""
    marks = {"python": 10.0, "mpi_start": 10.5, "mpi_end": 11.0, "resolved": 11.25,
             "tasks": 11.5, "same_code": 12.0, "results_file": 12.5}
    monkeypatch.setattr(startup, "_marks", marks)
    monkeypatch.setattr(startup, "process_start", lambda: 9.0)
    got = startup.phases(launched=8.0, ready=13.0, first_task=14.0)
    assert got == [1.0, 1.0, 0.75, 0.5, 0.25, 0.5, 1.0, 1.0]
    assert sum(got) == 14.0 - 8.0
    assert math.isnan(startup.phases(8.0, 13.0, None)[-1])   # a master runs no task


def test_summary_is_median_and_max_over_the_ranks_that_have_the_phase():
    nan = float("nan")
    per_rank = [[0.0] * 7 + [nan], [1.0] * 7 + [2.0], [3.0] * 7 + [4.0]]
    got = startup.summarise(per_rank)
    assert got["python"] == (1.0, 3.0) and got["first_task"] == (4.0, 4.0)
    assert startup.attributes(got)["startup_python_max"] == 3.0


def test_each_rank_takes_its_share_of_the_cores_unless_the_user_chose(monkeypatch):
    def cleared() -> None:   # recorded by monkeypatch first, so what share_cores sets is undone
        for name in startup.THREAD_VARIABLES:
            monkeypatch.setenv(name, "x")
            monkeypatch.delenv(name)
    threads = lambda: {os.environ.get(name) for name in startup.THREAD_VARIABLES}  # noqa: E731
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4")
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    cleared()
    startup.share_cores()
    assert threads() == {"16"}   # 4 unbound ranks on 64 cores
    cleared()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    startup.share_cores()
    assert threads() == {"2"}    # bound to two cores: those
    cleared()
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    startup.share_cores()
    assert threads() == {"8", None}   # the user's choice, and nothing more
    cleared()
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "1")
    startup.share_cores()
    assert threads() == {None}   # alone on its node: BLAS's own default


has_slack = pytest.mark.skipif(not os.path.exists(startup.SLACK_FILE), reason="Linux >= 4.6 only")


@has_slack
def test_timer_slack_is_set_and_given_back_on_the_main_thread_only():
    import threading

    ours = slack_now()
    assert startup.timer_slack(3_000_000) == ours and slack_now() == 3_000_000
    got = []
    thread = threading.Thread(target=lambda: got.append(startup.timer_slack(5_000_000)))
    thread.start()
    thread.join()
    assert got == [None] and slack_now() == 3_000_000   # a thread leaves it alone
    assert startup.timer_slack(ours) == 3_000_000 and slack_now() == ours


@pytest.mark.e2e
@has_slack
def test_tasks_run_with_the_timer_slack_their_rank_started_with(tmp_path):
    """MPI_Init ran with a coarse timer slack; by the tasks every rank has its own back (the
    one it inherited from mpiexec, as this process's), so their sleeps are as precise as ever."""
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", "tests.test_startup:slack_now", "--count", "2", "--schedule", "static",
                   "--quiet", "--out", str(out)], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert read(out) == {0: slack_now(), 1: slack_now()}


API_RUN = ("import sys, mtcmpi\n"
           "from tests.startup_tasks import cost_of\n"
           "mtcmpi.run(cost_of, range(2), out=sys.argv[1])\n")


@pytest.mark.e2e
def test_the_python_api_starts_mpi_as_mtcmpi_run_does(tmp_path):
    """mtcmpi.run in a script that has not started MPI starts it through startup.start_mpi (the
    timer slack), so MPI_Init's time is in the profile: 0 when the API's imports started MPI
    unseen."""
    out = tmp_path / "r.h5"
    proc = run(2, ["-c", API_RUN, str(out)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    import h5py

    with h5py.File(out) as f:
        assert f.attrs["startup_mpi_init_max"] > 0


@pytest.mark.e2e
def test_profile_startup_prints_every_phase_and_the_file_keeps_it(tmp_path):
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", "kernels.sleep:task", "--count", "4", "--quiet", "--profile-startup",
                   "--out", str(out)], ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert "start-up on 2 ranks (seconds, median / max over ranks):" in proc.stdout
    for name, _ in startup.PHASES:
        assert f"    {name} " in proc.stdout, name
    import h5py

    with h5py.File(out) as f:
        assert 0 < f.attrs["startup_mpi_init_max"] < 60 and "startup_first_task_median" in f.attrs


@pytest.mark.e2e
@pytest.mark.parametrize("broadcast", [False, True])
def test_import_broadcast_serves_the_task_module_from_memory_to_the_other_ranks(tmp_path, broadcast):
    """Static, so rank 0 works too: it read the module itself, rank 1 from memory only with
    --import-broadcast; the same-code check passes either way."""
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", "tests.test_startup:from_memory", "--count", "4", "--schedule", "static",
                   "--quiet", "--out", str(out)] + (["--import-broadcast"] if broadcast else []), ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert read(out) == {0: 0, 1: int(broadcast)}


@pytest.mark.e2e
def test_a_run_without_out_or_costs_imports_neither_numpy_nor_h5py():
    """Without --out (h5py, and numpy with it) or costs (numpy), no rank imports them: static,
    so rank 0 runs a task too."""
    proc = mtcmpi(["run", "tests.startup_tasks:without_heavy_modules", "--count", "2",
                   "--schedule", "static", "--quiet"], ranks=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 ok, 0 failed" in proc.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_with_costs_only_rank_0_imports_numpy(schedule):
    """Costs are estimated and ordered on rank 0; the ranks it hands tasks or shares to get
    plain ids (a numpy array would make each of them import numpy)."""
    proc = mtcmpi(["run", "tests.startup_tasks:on_workers_without_heavy_modules", "--count", "6",
                   "--cost", "tests.startup_tasks:cost_of", "--schedule", schedule, "--quiet"], ranks=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 ok, 0 failed" in proc.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("writers", ["node", "all"])
def test_workers_run_without_h5py_and_the_writers_build_the_same_file(tmp_path, monkeypatch, writers):
    """With --out a worker never imports h5py for its tasks: the file is written at the end by
    one rank per node (or, with MTCMPI_WRITERS=all, by every rank), with every row either way."""
    monkeypatch.setenv("MTCMPI_WRITERS", writers)
    out = tmp_path / "r.h5"
    proc = mtcmpi(["run", "tests.startup_tasks:h5py_loaded", "--count", "8", "--quiet", "--chunk", "1",
                   "--out", str(out)], ranks=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import h5py

    with h5py.File(out) as f:
        assert f["results/value"][:].tolist() == [0] * 8
        assert (f["tasks"]["status"][:] == 1).all() and set(f["tasks"]["rank"][:].tolist()) <= {1, 2}
        assert f.attrs["io_mode"] == "collective"


@pytest.mark.e2e
def test_workers_whose_tasks_return_plain_values_journal_them_without_numpy(tmp_path, monkeypatch):
    """With --out, workers whose tasks return Python numbers and strings never import numpy
    (values.Plain), nor at the end (their node's writer builds their rows), and the file holds
    what numpy scalars would have made, dtypes and all."""
    import h5py

    got = {}
    for fn in ("plain_values", "numpy_values"):
        (tmp_path / fn).mkdir()
        monkeypatch.setenv("EXIT_MARKS", str(tmp_path / fn))
        out = tmp_path / f"{fn}.h5"
        proc = mtcmpi(["run", f"tests.startup_tasks:{fn}", "--count", "6", "--quiet", "--chunk", "1",
                       "--out", str(out)], ranks=3)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with h5py.File(out) as f:
            assert (f["tasks"]["status"][:] == 1).all() and set(f["tasks"]["rank"][:].tolist()) <= {1, 2}
            got[fn] = {k: (ds.dtype, ds[:].tolist()) for k, ds in f["results"].items()}
    assert got["plain_values"]["numpy"][1] == [False] * 6   # no worker had numpy at its tasks
    marks = [p.read_text() for p in (tmp_path / "plain_values").iterdir()]
    assert len(marks) == 2 and marks == ["", ""]            # nor at its end
    assert got["plain_values"] == got["numpy_values"]
    assert got["plain_values"]["s"][1][:3] == [b"", b"t", b"tt"]


@pytest.mark.e2e
def test_startup_benchmark_times_and_counts_each_tool():
    """scaling/startup.py at 2 ranks, one turn: a start-up per tool, file operations when
    strace is there, and the RESULT line last."""
    import shutil
    import subprocess

    from tests.helpers import ROOT

    proc = subprocess.run([sys.executable, "scaling/startup.py", "--ranks", "2", "--repeat", "1",
                           "--tools", "mpi4py,futures,mtcmpi_bcast", "--strace-ranks", "2"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, start_new_session=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    got = dict(pair.split("=") for pair in last.split()[1:])
    assert last.startswith("RESULT ") and got["ranks"] == "2"
    assert all(0 < float(got[f"startup_{t}"]) < 120 for t in ("mpi4py", "futures", "mtcmpi_bcast"))
    assert 0 < float(got["startup_ratio_broadcast"])
    if shutil.which("strace"):
        assert int(got["fileops_mpi4py"]) > 0 and 0 < float(got["fileops_ratio_broadcast"]) < 5


@pytest.mark.e2e
@pytest.mark.parametrize("schedule", ["dynamic", "static"])
def test_a_resumed_run_gives_its_workers_the_tasks_left_without_numpy(tmp_path, monkeypatch, schedule):
    """--retry-failed runs the tasks an earlier run left: the ids travel as plain ints, so
    workers of plain-valued tasks still never import numpy, and the file ends complete."""
    out, marks = tmp_path / "r.h5", tmp_path / "marks"
    marks.mkdir()
    args = ["run", "tests.startup_tasks:plain_values", "--count", "6", "--quiet", "--chunk", "1",
            "--schedule", schedule, "--out", str(out)]
    monkeypatch.setenv("FAIL_ODD", "1")
    assert mtcmpi(args, ranks=3).returncode == 1   # the odd ones failed
    monkeypatch.delenv("FAIL_ODD")
    monkeypatch.setenv("EXIT_MARKS", str(marks))
    proc = mtcmpi(args + ["--retry-failed"], ranks=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 ok, 0 failed" in proc.stdout and "resumed: 3 tasks" in proc.stdout
    import h5py

    with h5py.File(out) as f:
        assert (f["tasks"]["status"][:] == 1).all() and f["results/i"][:].tolist() == [-2, -1, 0, 1, 2, 3]
    seen = sorted(p.read_text() for p in marks.iterdir())   # static: rank 0, the writer, works too
    assert seen == (["", ""] if schedule == "dynamic" else ["", "", "numpy h5py"]), seen
