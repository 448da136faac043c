"""A driver for `mtcmpi exec`: the rows of issue 14's table, one after another, each with its
own Executor (so they also show several Executors on one communicator in a row). Each row
prints `ROW name {json}` with what it saw; tests/test_executor_rows.py asserts on it."""
import gc
import json
import os
import signal
import sys
import threading
import time
import weakref
from concurrent.futures import BrokenExecutor, CancelledError

from mpi4py import MPI

import mtcmpi

WORKERS = max(1, MPI.COMM_WORLD.size - 1)
DEADLINE = 20   # seconds any one wait may take: a row that would hang fails instead


def crash(how):
    if how == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


def nap(seconds):
    time.sleep(seconds)
    return seconds


def mark(path, seconds):
    """Append a line to path (this call ran), then nap."""
    with open(path, "a") as f:
        f.write("x\n")
    time.sleep(seconds)


class ExitsWhenPickled:
    def __reduce__(self):
        sys.exit(7)


class ExitsWhenUnpickled:
    def __reduce__(self):
        return sys.exit, (7,)


class Breaks:
    def __reduce__(self):
        return int, ("not a number",)


class Big:
    """A result that is not a plain type (so it travels pickled), to follow its lifetime."""


def make(kind, i=0):
    return {"exit-pickle": ExitsWhenPickled, "exit-unpickle": ExitsWhenUnpickled,
            "breaks": Breaks, "big": Big}[kind]() if kind != "int" else i


def fail_init():
    raise RuntimeError("no licence for the solver")


def outcome(future):
    exc = future.exception(timeout=DEADLINE)
    return "ok" if exc is None else f"{type(exc).__name__}: {exc}"


def row_crash():
    with mtcmpi.Executor(isolate=True) as ex:
        crashed = [outcome(ex.submit(crash, how)) for how in ("segfault", "exit", "kill")]
        return {"crashed": crashed, "after": ex.submit(nap, 0).result(timeout=DEADLINE)}


def row_exit_while_pickled():
    with mtcmpi.Executor() as ex:
        return {"bad": outcome(ex.submit(make, "exit-pickle")), "after": ex.submit(nap, 0).result(timeout=DEADLINE)}


def row_exit_while_unpickled():
    with mtcmpi.Executor() as ex:
        return {"bad": outcome(ex.submit(make, "exit-unpickle")), "after": ex.submit(nap, 0).result(timeout=DEADLINE)}


def row_one_bad_result_of_21():
    with mtcmpi.Executor() as ex:
        futures = [ex.submit(make, "breaks" if i == 10 else "int", i) for i in range(21)]
        return {"outcomes": [outcome(f) for f in futures]}


def row_cancel_behind_a_running_task():
    with mtcmpi.Executor(max_workers=1) as ex:
        slow = ex.submit(nap, 1.0)
        queued = [ex.submit(nap, 0) for _ in range(20)]
        end = time.monotonic() + DEADLINE
        while not slow.running() and time.monotonic() < end:
            time.sleep(0.001)
        running = sum(f.running() for f in queued)
        cancelled = sum(f.cancel() for f in queued)
        return {"slow_running": slow.running(), "queued_running": running, "cancelled": cancelled,
                "all_cancelled_done": all(f.done() for f in queued if f.cancelled())}


def row_shutdown_cancel_futures(tmp):
    ex = mtcmpi.Executor()
    futures = [ex.submit(nap, 0.1) for _ in range(50)]
    time.sleep(0.05)   # the scenario: shut down 50 ms after submitting
    ex.shutdown(wait=True, cancel_futures=True)
    return {"cancelled": sum(f.cancelled() for f in futures), "done": sum(f.done() for f in futures),
            "workers": ex.num_workers}


def row_map_closed_after_first(tmp):
    path = os.path.join(tmp, "ran")
    with mtcmpi.Executor() as ex:
        results = ex.map(mark, [path] * 20, [0.1] * 20)
        next(results)
        results.close()
    with open(path) as f:
        return {"ran": len(f.readlines()), "workers": ex.num_workers}


def row_del_then_new_executor():
    ex = mtcmpi.Executor()
    ex.submit(nap, 0.1)
    del ex
    gc.collect()
    end = time.monotonic() + DEADLINE
    while any(t.name == "mtcmpi-executor" for t in threading.enumerate()) and time.monotonic() < end:
        time.sleep(0.01)
    alive = sum(t.name == "mtcmpi-executor" for t in threading.enumerate())
    with mtcmpi.Executor() as again:
        return {"dispatchers_left": alive, "new": again.submit(nap, 0).result(timeout=DEADLINE)}


def row_map_keeps_no_yielded_result():
    with mtcmpi.Executor() as ex:
        results = ex.map(make, ["big"] * 3)
        first = next(results)
        ref = weakref.ref(first)
        del first
        end = time.monotonic() + 2   # the dispatcher thread may still be returning from settling it
        while ref() is not None and time.monotonic() < end:
            gc.collect()
            time.sleep(0.01)
        kept = ref() is not None
        rest = len(list(results))
        return {"kept": kept, "rest": rest}


def row_many_submits_then_shutdown():
    ex = mtcmpi.Executor()
    futures = [ex.submit(time.sleep, 0.01) for _ in range(50)]
    ex.shutdown()
    return {"done": sum(f.done() for f in futures), "results": [f.result() for f in futures].count(None)}


def row_submit_after_failure():
    ex = mtcmpi.Executor(initializer=fail_init)
    try:   # the first call fails, or is refused if the Executor broke already (as stdlib's)
        ex.submit(nap, 0).result(timeout=DEADLINE)
        broken = "no error"
    except BrokenExecutor as exc:
        broken = f"BrokenExecutor: {exc} | {exc.__cause__}"
    try:
        ex.submit(nap, 0)
        later = "accepted"
    except BrokenExecutor as exc:
        later = f"BrokenExecutor: {exc}"
    ex.shutdown()
    with mtcmpi.Executor() as again:   # the next Executor is not broken
        return {"first": broken, "later": later, "next": again.submit(nap, 0).result(timeout=DEADLINE)}


if __name__ == "__main__":
    tmp = sys.argv[1]
    for name, fn in list(globals().items()):
        if name.startswith("row_"):
            print(f"START {name[4:]}", flush=True)
            t0 = time.monotonic()
            try:
                seen = fn(tmp) if fn.__code__.co_argcount else fn()
            except BaseException as exc:   # noqa: BLE001 - reported for the test to show
                seen = {"error": f"{type(exc).__name__}: {exc}"}
            seen["seconds"] = round(time.monotonic() - t0, 3)
            print(f"ROW {name[4:]} {json.dumps(seen)}", flush=True)
