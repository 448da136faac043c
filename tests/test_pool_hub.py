"""`mtcmpi hub`: a standalone session that outlives its clients; pools and clients join it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import mtcmpi
from mtcmpi.pool.connection import SessionError
from tests.helpers import ROOT, environment
from tests.test_pool import pools, square, wait_until  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(120)


def test_hub_outlives_a_client(tmp_path, pools):
    path = str(tmp_path / "pool.json")
    hub = subprocess.Popen([sys.executable, "-m", "mtcmpi", "hub", "--connection", path, "--ip",
                            "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd=ROOT, env=environment(), start_new_session=True)
    try:
        wait_until(lambda: os.path.exists(path), 30, "the hub's connection file")
        pools(path, 2)
        first = mtcmpi.connect(path, listen=False)
        assert first.submit(square, 3).result(timeout=60) == 9
        first.shutdown()   # the client leaves; the session and its pool stay
        second = mtcmpi.connect(path, listen=False)
        assert list(second.map(square, range(10), chunksize=4)) == [i * i for i in range(10)]
        second.shutdown()
        second_hub = subprocess.run([sys.executable, "-m", "mtcmpi", "hub", "--connection", path],
                                    capture_output=True, text=True, timeout=60, cwd=ROOT, env=environment())
        assert second_hub.returncode == 2 and "which is live: use that one" in second_hub.stderr
    finally:
        os.killpg(hub.pid, signal.SIGTERM)
        out, _ = hub.communicate(timeout=30)
    assert hub.returncode == 0 and "pool 0 on" in out, out
    with pytest.raises(SessionError, match="which is gone"):
        mtcmpi.connect(path, listen=False)
