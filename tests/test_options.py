"""RunOptions: one set of options, one set of checks, for `mtcmpi run` and `mtcmpi.run()`."""
import logging
import math

import h5py
import pytest

import mtcmpi
from mtcmpi.errors import UsageError
from mtcmpi.jobscript import job_command
from mtcmpi.options import RunOptions
from mtcmpi.report import file_report
from mtcmpi.run_args import parse_run
from tests import tasks_for_tests as t
from tests.helpers import mtcmpi as mtcmpi_cli

pytestmark = pytest.mark.timeout(60)
NAN, INF = math.nan, math.inf

BAD = [
    (dict(grace=NAN), "--grace must be >= 0 and finite (at most 100,000,000 s), not nan"),
    (dict(grace=INF), "--grace must be >= 0 and finite (at most 100,000,000 s), not inf"),
    (dict(grace=-1.0), "--grace must be >= 0"),
    (dict(flush_interval=INF), "--flush-interval must be > 0 and finite (at most 100,000,000 s), not inf"),
    (dict(flush_interval=NAN), "--flush-interval must be > 0 and finite (at most 100,000,000 s), not nan"),
    (dict(flush_interval=0.0), "--flush-interval must be > 0"),
    (dict(timeout=0.0), "--timeout must be > 0"),
    (dict(timeout=INF), "--timeout must be > 0 and finite (at most 100,000,000 s), not inf"),
    (dict(progress_interval=NAN), "--progress-interval must be > 0 and finite (at most 100,000,000 s), not nan"),
    (dict(chunk=0), "--chunk must be >= 1"),
    (dict(retries=-1), "--retries must be >= 0"),
    (dict(retries=2 ** 64), "--retries must be >= 0, a whole number"),
    (dict(max_failures=0), "--max-failures must be >= 1"),
    (dict(prefetch="-1"), "--prefetch must be a whole number from 0 to 1000 or 'auto'"),
    (dict(prefetch="10000000000000000000"), "--prefetch must be a whole number from 0 to 1000"),
    (dict(grace=1e12), "--grace must be >= 0 and finite (at most 100,000,000 s), not 1000000000000.0"),
    (dict(flush_interval=1e300), "--flush-interval must be > 0 and finite (at most"),
    (dict(walltime="nan"), "--walltime 'nan' is not HH:MM:SS"),
    (dict(walltime="inf"), "--walltime 'inf' is not HH:MM:SS"),
    (dict(walltime="0:00"), "--walltime '0:00' must be longer than 0 s"),
    (dict(schedule="fastest"), "unknown schedule 'fastest'"),
    (dict(restart=True), "go with --out"),
    (dict(out=""), "--out is empty"),
    (dict(cost="n", costs_from="a.h5"), "give --cost or --costs-from, not both"),
    (dict(log_level="loud"), "--log-level 'loud': use one of debug, info, warning, error"),
    (dict(ranks_per_task=0), "--ranks-per-task must be >= 1"),
    (dict(ranks_per_task=2, ranks="n"), "give --ranks-per-task or --ranks, not both"),
    (dict(packing="fifo"), "--packing 'fifo': choose one of backfill, greedy, strict"),
]
API_ONLY = [   # the command line's argparse refuses these itself (or has no --chunk-rows yet)
    (dict(chunk_rows=0), "--chunk-rows must be >= 1"),
    (dict(chunk=2.5), "--chunk must be >= 1, a whole number, not 2.5"),
    (dict(chunk=True), "--chunk must be >= 1, a whole number, not True"),
    (dict(grace="5"), "--grace must be >= 0 and finite (at most 100,000,000 s), not '5'"),
]


@pytest.mark.parametrize("given, words", BAD + API_ONLY)
def test_a_bad_value_is_refused_with_one_line(given, words):
    with pytest.raises(UsageError) as info:
        RunOptions(**given)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("given, words", BAD)
def test_the_command_line_refuses_the_same_values_with_the_same_words(given, words):
    argv = []
    for name, value in given.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    with pytest.raises(UsageError) as info:
        RunOptions.from_args(parse_run(["m:f", "--count", "1", *argv]))
    assert words in str(info.value)


def test_every_run_argument_is_an_option_or_part_of_the_task_list():
    task_list = {"target", "count", "params", "command", "files", "args_file", "taskfile",
                 "skip_existing", "output_dir"}
    given = set(vars(parse_run(["m:f", "--count", "1"])))
    fields = set(RunOptions._fields)
    assert given - task_list <= fields
    assert fields - given <= {"compression", "chunk_rows"}   # --compression/--chunk-rows: results helper


def test_the_command_line_and_the_api_have_the_same_defaults():
    assert RunOptions.from_args(parse_run(["m:f", "--count", "1"])) == RunOptions()


def test_an_unknown_api_option_names_the_known_ones():
    with pytest.raises(UsageError, match="unknown run option 'retry'.*retries"):
        mtcmpi.run(t.square, range(3), retry=2)


def test_the_api_takes_the_command_line_options(tmp_path):
    """mtcmpi.run(fn, rows, out=..., retries=..., timeout=..., cost=...) as `mtcmpi run` would."""
    out = tmp_path / "r.h5"
    rows = [{"x": x, "steps": 10 - x} for x in range(6)]
    results = mtcmpi.run(t.add_steps, rows, star=True, out=str(out), retries=1, timeout=30,
                         cost="steps", quiet=True)
    expected = [t.add_steps(**row) for row in rows]
    assert [r["value"] for r in results] == expected   # as stored: a dict of arrays
    with h5py.File(out) as f:
        assert f["results/value"][:].tolist() == expected
        assert "longest first" in f.attrs["policy"]
    again = mtcmpi.run(t.add_steps, rows, star=True, out=str(out), quiet=True)   # resumes: all done
    assert [r["value"] for r in again] == expected   # read back from the file


def simulate(row):
    return 2 * row["x"]


def test_the_issues_example_runs_as_its_command_line_would(tmp_path):
    rows = [{"x": x, "n_steps": x % 3} for x in range(9)]
    results = mtcmpi.run(simulate, rows, out=str(tmp_path / "r.h5"), retries=2, timeout=60,
                         cost="n_steps", quiet=True)
    assert [r["value"] for r in results] == [2 * x for x in range(9)]


def test_the_api_stops_at_max_failures_and_says_so():
    with pytest.raises(mtcmpi.TasksFailed, match="failed") as info:
        mtcmpi.run(t.maybe_fail, range(40), max_failures=1, quiet=True)
    assert 1 <= len(info.value.failures) < 8


def test_log_level_sets_the_mtcmpi_logger_on_rank_0_only():
    logger = logging.getLogger("mtcmpi")
    before = logger.level
    try:
        RunOptions(log_level="debug").configure_logging(rank=1)
        assert logger.level == before
        RunOptions(log_level="DEBUG").configure_logging(rank=0)
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(before)


def test_a_job_script_refuses_a_bad_run_option_when_written():
    with pytest.raises(UsageError, match=r"--flush-interval must be > 0 and finite \(at most 100,000,000 s\), not inf"):
        job_command(["m:f", "--count", "3", "--out", "r.h5", "--flush-interval", "inf"], 60)


@pytest.mark.e2e
@pytest.mark.parametrize("args", [["--grace", "nan"], ["--flush-interval", "inf"], ["--walltime", "nan"]])
def test_every_rank_exits_2_with_one_line(args):
    proc = mtcmpi_cli(["run", "tests.tasks_for_tests:square", "--count", "3", "--out", "r.h5", *args],
                      ranks=2)
    assert proc.returncode == 2 and proc.stderr.count("mtcmpi: error:") == 1, proc.stderr


@pytest.mark.e2e
def test_summary_and_report_show_the_same_efficiency(tmp_path):
    """One definition of the wall time (first task start to last task end) for both."""
    out = tmp_path / "r.h5"
    proc = mtcmpi_cli(["run", "kernels.sleep:task", "--count", "12", "--out", str(out)], ranks=3)
    assert proc.returncode == 0, proc.stderr
    shown = float(proc.stdout.split("efficiency ")[1].split()[0])
    assert shown == pytest.approx(file_report(str(out))["efficiency"], abs=0.0005)
    assert "results: " in proc.stdout and "written in" in proc.stdout   # the store time, apart
    from mpi4py import MPI   # the same venv, so the same library as the job's (Open MPI or MPICH)
    with h5py.File(out) as f:
        assert f.attrs["mpi_library"] == MPI.Get_library_version().strip("\0\n ")
