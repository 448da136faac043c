"""Tests of kernels.touch: function mode, script mode exit codes and make_inputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels import touch as tk

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_touch_creates_out_next_to_input(tmp_path):
    inp = tmp_path / "case.inp"
    inp.write_text("x")
    assert tk.touch(str(inp)) == 0
    out = tmp_path / "case.out"
    assert out.is_file() and out.stat().st_size == 0
    os.utime(out, (0, 0))
    assert tk.touch(str(inp)) == 0
    assert out.stat().st_mtime > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.inp", "case.out"]


def test_touch_missing_input_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        tk.touch(str(tmp_path / "nope.inp"))
    assert not (tmp_path / "nope.out").exists()


def test_make_inputs(tmp_path):
    paths = tk.make_inputs(str(tmp_path / "data"), 12)
    assert [os.path.basename(p) for p in paths] == [f"{i:04d}.inp" for i in range(12)]
    assert all(os.path.getsize(p) == 0 for p in paths)
    assert sorted(os.listdir(tmp_path / "data")) == [os.path.basename(p) for p in paths]
    assert os.path.basename(tk.make_inputs(str(tmp_path / "big"), 10001)[-1]) == "10000.inp"


@pytest.mark.parametrize("launcher", [["kernels/touch.py"], ["-m", "kernels.touch"]])
def test_script_mode_touches_several(tmp_path, launcher):
    inputs = tk.make_inputs(str(tmp_path), 3)
    result = run(*launcher, *inputs)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert all(os.path.isfile(tk.out_path(p)) for p in inputs)


@pytest.mark.parametrize("launcher", [["kernels/touch.py"], ["-m", "kernels.touch"]])
def test_script_mode_missing_input_fails(tmp_path, launcher):
    good = tk.make_inputs(str(tmp_path), 1)[0]
    missing = str(tmp_path / "missing.inp")
    result = run(*launcher, missing, good)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "missing.inp" in lines[0]
    assert os.path.isfile(tk.out_path(good))


def test_script_mode_make(tmp_path):
    result = run("-m", "kernels.touch", "--make", str(tmp_path / "data"), "5")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "data")) == [f"{i:04d}.inp" for i in range(5)]


@pytest.mark.parametrize("args", [[], ["--make", "only-a-directory"], ["--make", "d", "many"]])
def test_script_mode_bad_usage(args):
    result = run("-m", "kernels.touch", *args)
    assert result.returncode == 2
    assert "usage" in result.stderr
