"""mtcmpi.connect() and `mtcmpi serve`: a client in this process, pools started with mpiexec.

Every pool is started in its own session and killed (its whole process group) by the test.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import pickle
import platform
import signal
import socket
import subprocess
import threading
import time

import h5py
import pytest

import mtcmpi
from mtcmpi.pool.connection import SessionError, read
from tests.helpers import ROOT, run, signal_job, start

pytestmark = pytest.mark.timeout(120)


def wait_until(condition, timeout: float = 30, what: str = "condition"):
    """Poll condition until it returns something true; fail after timeout seconds."""
    end = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return found


class Pool:
    """`mpiexec -n ranks python -m mtcmpi serve --connection path ...`, killed at the end."""

    def __init__(self, path: str, ranks: int = 2, *args: str, log: str | None = None):
        self.log = log or f"{path}.pool{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            self.proc = start(ranks, ["-m", "mtcmpi", "serve", "--connection", path, *args],
                              stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        with open(self.log) as f:
            return f.read()

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        signal_job(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def pools():
    """Start pools with pools(path, ranks, *args); every one is killed after the test."""
    started: list[Pool] = []

    def start(path: str, ranks: int = 2, *args: str) -> Pool:
        started.append(Pool(path, ranks, *args))
        return started[-1]
    yield start
    for pool in started:
        pool.kill()


@pytest.fixture
def session(tmp_path):
    """A session owned by this process, on 127.0.0.1, shut down after the test."""
    path = str(tmp_path / "pool.json")
    ex = mtcmpi.connect(path, ip="127.0.0.1", out=str(tmp_path / "session.h5"))
    yield path, ex
    ex.shutdown(wait=True, cancel_futures=True)


def square(x):
    return x * x


def fails(x):
    raise ValueError(f"no good: {x}")


def test_scatter_gather_submit_map_and_errors(session, pools, tmp_path):
    path, ex = session
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    pools(path, 2)
    local = lambda x: x + 0.5   # defined here: travels by value  # noqa: E731
    futures = [ex.submit(square, i) for i in range(200)]
    done = {f.result() for f in cf.as_completed(futures, timeout=60)}
    assert done == {i * i for i in range(200)}
    assert list(ex.map(local, range(50), chunksize=7)) == [i + 0.5 for i in range(50)]
    assert list(ex.map(pow, range(5), [2] * 5, timeout=30)) == [0, 1, 4, 9, 16]
    with pytest.raises(ValueError, match="no good: 3") as raised:
        ex.submit(fails, 3).result(timeout=30)
    assert "pool 0" in str(raised.value.__cause__) and "rank 1" in str(raised.value.__cause__)
    assert f"on {platform.node()}" in str(raised.value.__cause__)
    lock = threading.Lock()
    with pytest.raises(pickle.PicklingError, match="arguments of a call of 'square'.*do not pickle"):
        ex.submit(square, lock)
    with pytest.raises(pickle.PicklingError, match="cannot send function .*does not pickle"):
        ex.submit(lambda: lock)
    ex.shutdown(wait=True)
    with h5py.File(tmp_path / "session.h5") as f:
        tasks = f["tasks"][:]
        assert len(tasks) == 200 + 8 + 5 + 1 and (tasks["status"] == 1).sum() == 213
        assert f["errors/message"].asstr()[213] == "no good: 3"
    report = run(None, ["-m", "mtcmpi", "report", str(tmp_path / "session.h5")], 60)
    assert report.returncode == 0 and "213 ok, 1 failed" in report.stdout, report


def test_cancel_timeout_and_no_pool(session):
    path, ex = session
    future = ex.submit(square, 2)   # no pool yet: it waits in the queue
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.3)
    assert future.cancel() and future.cancelled()


def test_second_client_joins_the_live_session(session, pools):
    path, owner = session
    pools(path, 2)
    other = mtcmpi.connect(path)   # the file names a live session: join it, do not take over
    try:
        assert other.connection.address == owner.connection.address
        assert other.submit(square, 9).result(timeout=60) == 81
    finally:
        other.shutdown()


def test_bad_input_one_clear_error(tmp_path, pools):
    missing = str(tmp_path / "none.json")
    with pytest.raises(SessionError, match="no such connection file"):
        mtcmpi.connect(missing, listen=False)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(SessionError, match="not an mtcmpi connection file"):
        mtcmpi.connect(str(garbage))
    # a file for a session that is gone: connect(listen=False) says so; a pool waits, then says so
    path = str(tmp_path / "gone.json")
    ex = mtcmpi.connect(path, ip="127.0.0.1")
    ex.shutdown()
    start = time.monotonic()
    with pytest.raises(SessionError, match="which is gone"):
        mtcmpi.connect(path, listen=False)
    assert time.monotonic() - start < 10
    pool = pools(path, 1, "--wait", "1")
    assert pool.wait(60) == 2
    assert "no live session after 1 s" in pool.output() and "which is gone" in pool.output()


def test_versions_differ_refused_at_connect_naming_both(session, monkeypatch):
    path, ex = session
    monkeypatch.setattr("mtcmpi.pool.session.PYTHON", "2.7")
    with pytest.raises(SessionError, match="runs Python 2.7 but the session runs Python 3"):
        mtcmpi.connect(path)
    monkeypatch.setattr("mtcmpi.pool.session.__version__", "0.0.9")
    monkeypatch.setattr("mtcmpi.pool.session.PYTHON", read(path).python)
    with pytest.raises(SessionError, match="runs mtcmpi 0.0.9 but the session runs mtcmpi"):
        mtcmpi.connect(path)


# ---- security: nothing reaches the session without the key ----

def raw(address: str) -> socket.socket:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closes the connection within timeout seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_intruders_refused_and_the_session_unaffected(session, pools, tmp_path, caplog):
    import zmq

    from mtcmpi.pool import auth, wire
    from mtcmpi.pool.connection import Connection

    path, ex = session
    good = read(path)
    caplog.set_level("INFO", logger="mtcmpi.pool")
    # a wrong key: the ZeroMQ handshake fails, not a byte is delivered
    wrong = Connection.new(good.address)
    wrong.server_public = good.server_public
    context = zmq.Context()
    intruder = auth.dial(context, wrong)
    wire.send(intruder, wire.SUBMIT, [(0, b"cos\nsystem\n(S'touch pwned'\ntR.")])
    assert not intruder.poll(1500)
    intruder.close(linger=0)
    context.term()
    wait_until(lambda: "unknown key" in caplog.text, 10, "the refusal in the log")
    # garbage, a huge length prefix, a connection that stalls half-way
    garbage = raw(good.address)
    garbage.sendall(b"GET / HTTP/1.0\r\n\r\n" * 10)
    huge = raw(good.address)
    huge.sendall(b"\xff" + b"\x7f" + b"\xff" * 7 + b"\x7f")   # ZMTP signature, 2^63-byte frame
    stalled = raw(good.address)
    stalled.sendall(b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03")   # half a greeting
    for sock in (garbage, huge, stalled):
        assert closed_by_peer(sock, 10)
        sock.close()
    assert not (tmp_path / "pwned").exists() and not os.path.exists(os.path.join(ROOT, "pwned"))
    pools(path, 2)
    assert ex.submit(square, 12).result(timeout=60) == 144
