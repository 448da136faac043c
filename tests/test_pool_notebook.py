"""examples/pool.ipynb runs headless against a pool this test starts, and gathers its results."""
from __future__ import annotations

import os

import h5py
import pytest

from tests.helpers import ROOT
from tests.test_pool import pools  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(180)


def test_notebook_scatter_gather(tmp_path, pools, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(os.path.join(ROOT, "examples", "pool.ipynb"), as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells), "commit the notebook with outputs cleared"
    path = str(tmp_path / "pool.json")
    pool = pools(path, 2)   # waits for the file the notebook writes
    monkeypatch.setenv("MTCMPI_POOL_FILE", path)   # the kernel inherits these
    monkeypatch.setenv("MTCMPI_POOL_IP", "127.0.0.1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    nbclient.NotebookClient(notebook, timeout=150, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "400 values; sum" in text and "largest at x =" in text
    assert "session.h5: 47 tasks on 1 ranks (pool): 47 ok" in text   # report reads the record
    with h5py.File(tmp_path / "session.h5") as f:
        assert len(f["tasks"]) == 7 + 40 and (f["tasks"]["status"][:] == 1).all()
    assert pool.wait(30) == 0 and "the session ended" in pool.output()
