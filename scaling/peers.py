"""The paper's peers, run on the same seeded tasks as mtcmpi: IPython parallel, Celery, Dask.

    python scaling/peers.py PEER WORKERS weak PER_WORKER TIME_SCALE SEED
    python scaling/peers.py PEER WORKERS noop SECONDS

Each peer starts the way its users start it on a cluster and prints one JSON line per run:
ipyparallel: a controller on 127.0.0.1 and WORKERS engines started by mpiexec; a direct view
map (contiguous blocks: static) and a load-balanced view map (one task at a time: dynamic).
celery: Debian's redis-server on 127.0.0.1 on a free port as broker and result backend,
started here and stopped after, WORKERS solo workers taking one task at a time (prefetch 1,
late acks). dask: dask-mpi under mpiexec (scheduler on rank 0, WORKERS one-thread workers)
and a Client.map. Start-up = MTCMPI_LAUNCH_TIME (set by the harness just before it starts this
script) until the peer reports all workers ready; engine = tasks submitted until the last result
is back. noop: tasks/s of no-op tasks, the count growing 4x until one map takes SECONDS
(a peer that sends a whole map in one message is not held to a count sized for the slow
ones). A peer that cannot start prints {"error": ...} and exits 1; the harness goes on.
Needs `pip install 'mtcmpi[peers]'` (and apt-get install redis-server for celery).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]
from _mpirun import environment  # noqa: E402

PEERS = ("ipyparallel", "celery", "dask")
ROWS = {"ipyparallel": ("ipp_direct", "ipp_lb"), "celery": ("celery",), "dask": ("dask",)}
READY_TIMEOUT = 300.0
STARTED: list[subprocess.Popen] = []   # every process group this script started, stopped at exit


def start(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """Popen in a new session, remembered so that main() stops it however the peer ends."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    STARTED.append(proc)
    return proc


def wait_until(ready: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ready() until it returns something true; RuntimeError naming `what` after timeout."""
    until = time.time() + timeout
    while time.time() < until:
        got = ready()
        if got:
            return got
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM a process group started with start_new_session, SIGKILL it after grace."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)


class IPyParallel:
    """A controller and mpiexec-started engines; direct view (static), load-balanced (dynamic)."""

    def __init__(self, workers: int, tmp: str):
        import ipyparallel as ipp

        self.cluster = ipp.Cluster(n=workers, engines="mpi", controller_ip="127.0.0.1",
                                   profile_dir=os.path.join(tmp, "profile"), cluster_id="mtcmpi",
                                   log_level=40)
        try:   # not start_and_connect_sync: it gives the engines 60 s, too few for 127 on 2 cores
            self.cluster.start_cluster_sync()
            self.client = self.cluster.connect_client_sync()
            self.client.wait_for_engines(workers, timeout=READY_TIMEOUT)
        except BaseException:
            self.cluster.stop_cluster_sync()
            raise

    def maps(self) -> dict[str, Callable]:
        direct, balanced = self.client[:], self.client.load_balanced_view()
        return {"ipp_direct": lambda fn, *a: direct.map_sync(fn, *a),
                "ipp_lb": lambda fn, *a: balanced.map_sync(fn, *a, chunksize=1)}

    def stop(self) -> None:
        self.client.close()
        self.cluster.stop_cluster_sync()


@functools.cache
def celery_app():
    """The Celery app of the workers and the client (broker and backend: MTCMPI_PEER_BROKER)."""
    from celery import Celery

    from kernels.noop import none
    from kernels.sleep import task

    url = os.environ["MTCMPI_PEER_BROKER"]
    app = Celery("mtcmpi_peer", broker=url, backend=url)
    app.conf.update(worker_prefetch_multiplier=1, task_acks_late=True, result_expires=3600,
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    app.task(name="sleep")(task)
    app.task(name="noop")(none)
    return app


def __getattr__(name: str) -> Any:
    """`celery -A peers:app worker`: the app, built on first use (celery is an optional extra)."""
    if name == "app":
        return celery_app()
    raise AttributeError(name)


class CeleryPeer:
    """redis-server on a free port, and WORKERS solo Celery workers."""

    def __init__(self, workers: int, tmp: str):
        server = shutil.which("redis-server")
        if not server:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        port = free_port()
        start([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        os.environ["MTCMPI_PEER_BROKER"] = f"redis://127.0.0.1:{port}/0"
        import redis
        wait_until(lambda: _pings(redis.Redis(port=port)), 30, "redis-server")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))
        log = os.path.join(tmp, "celery.log")
        with open(log, "w") as out:
            for i in range(workers):
                start([sys.executable, "-m", "celery", "-A", "peers:app", "worker", "-P", "solo",
                       "-n", f"w{i}@%h", "--without-gossip", "--without-mingle", "-l", "WARNING"],
                      env=env, cwd=tmp, stdout=out, stderr=out)
        self.app = celery_app()
        wait_until(lambda: len(self.app.control.ping(timeout=0.5)) >= workers or failure(log),
                   READY_TIMEOUT, f"{workers} celery workers")
        if failure(log):
            raise RuntimeError(f"a celery worker: {failure(log)}")

    def maps(self) -> dict[str, Callable]:
        def run(fn: Callable, *args: list) -> list:
            name = "noop" if fn.__module__ == "kernels.noop" else "sleep"
            sent = [self.app.send_task(name, args=list(a)) for a in zip(*args)]
            return [r.get(timeout=3600) for r in sent]
        return {"celery": run}

    def stop(self) -> None:
        """main() stops the workers and the broker."""


def failure(log: str) -> str:
    """The last error line of a peer's log once it has a traceback, else ''."""
    with open(log, errors="replace") as f:
        text = f.read()
    if "Traceback" not in text:
        return ""
    return next((line for line in reversed(text.splitlines()) if "Error" in line), "failed")[:300]


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:   # noqa: BLE001 - not listening yet
        return False


class DaskMPI:
    """dask-mpi under mpiexec: the scheduler on rank 0, WORKERS one-thread workers."""

    def __init__(self, workers: int, tmp: str):
        from distributed import Client

        scheduler = os.path.join(tmp, "scheduler.json")
        cmd = ["mpiexec", "-n", str(workers + 1), sys.executable, "-m", "dask_mpi.cli",
               "--scheduler-file", scheduler, "--scheduler-port", str(free_port()),
               "--nthreads", "1", "--no-dashboard",
               "--worker-class", "distributed.Worker", "--local-directory", tmp,
               "--interface", "lo"]
        log = os.path.join(tmp, "dask.log")
        with open(log, "w") as out:
            self.proc = start(cmd, stdout=out, stderr=out)
        wait_until(lambda: os.path.exists(scheduler) or self.proc.poll() is not None
                   or failure(log), READY_TIMEOUT, "the dask scheduler")
        if not os.path.exists(scheduler):   # its workers would wait for it forever
            raise RuntimeError(f"dask-mpi: {failure(log) or f'exited {self.proc.returncode}'}")
        self.client = Client(scheduler_file=scheduler, timeout=READY_TIMEOUT)
        self.client.wait_for_workers(workers, timeout=READY_TIMEOUT)

    def maps(self) -> dict[str, Callable]:
        def run(fn: Callable, *args: list) -> list:
            return self.client.gather(self.client.map(fn, *args, pure=False))
        return {"dask": run}

    def stop(self) -> None:
        self.client.shutdown()   # main() then stops mpiexec, had shutdown not ended it


STARTERS = {"ipyparallel": IPyParallel, "celery": CeleryPeer, "dask": DaskMPI}


def main(argv: list[str]) -> int:
    peer, workers, mode, rest = argv[0], int(argv[1]), argv[2], argv[3:]
    launched = float(os.environ.get("MTCMPI_LAUNCH_TIME", time.time()))
    tmp = tempfile.mkdtemp(prefix=f"mtcmpi-{peer}-")
    started = None
    try:
        started = STARTERS[peer](workers, tmp)
        ready = time.time()
        for name, run in started.maps().items():
            if mode == "weak":
                from kernels.sleep import task
                per_worker, scale, seed = int(rest[0]), float(rest[1]), int(rest[2])
                n = workers * per_worker
                t0 = time.time()
                done = run(task, list(range(n)), [scale] * n, [seed] * n)
                print(json.dumps({"policy": name, "workers": workers, "startup": ready - launched,
                                  "engine": time.time() - t0, "wrap": 0.0, "store": 0.0,
                                  "results_file": "", "ok": len(done)}), flush=True)
            else:
                from kernels.noop import none
                run(none, [None])   # warm up: the workers have the function
                n, took = 25, 0.0
                while took < float(rest[0]) and n < 1_000_000:
                    n *= 4
                    t0 = time.time()
                    run(none, [None] * n)
                    took = time.time() - t0
                print(json.dumps({"tool": name, "tps": n / took, "tasks": n}), flush=True)
        return 0
    except Exception as exc:   # noqa: BLE001 - reported as the peer's result, the study goes on
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
                          "rows": ROWS[peer]}), flush=True)
        return 1
    finally:
        if started is not None:
            try:
                started.stop()
            except Exception as exc:   # noqa: BLE001
                print(f"stopping {peer}: {exc}", file=sys.stderr)
        for proc in reversed(STARTED):   # workers before the broker or scheduler they talk to
            stop_group(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def run_peer(peer: str, workers: int, args: list[str], timeout: float = 900) -> list[dict]:
    """The harness side: this script in a new session with the MPI environment; its JSON lines,
    or one {"error": ...} per row if it failed, hung or printed nothing."""
    cmd = [sys.executable, os.path.abspath(__file__), peer, str(workers), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=environment(), start_new_session=True)
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        out, err = "", f"timed out after {timeout:.0f} s"
        del exc
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if rows and "error" not in rows[0]:
        return rows
    error = rows[0]["error"] if rows else (err.strip().splitlines() or ["no output"])[-1][:300]
    return [{"policy": name, "tool": name, "error": error} for name in ROWS[peer]]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
