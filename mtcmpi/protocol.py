"""Every MPI message mtcmpi sends: its tag and what it carries.

The engine (master/worker self-scheduling, tags 1-3).

A worker sends REQUEST: a fixed buffer of four doubles (tasks run, failed, busy seconds since
its last request; 1 if it had to stop, e.g. its journal cannot be written), received straight into a preallocated array with no pickling. The master
answers WORK: a pickled pair (chunk, far): chunk a list of (task id, payload), empty meaning
stop; far True while more than FAR x workers tasks remain, so the worker may ask for its next
chunk before running this one however long its tasks (the last tasks still go on demand to
whoever is free first, which keeps the tail balanced). With costs, longest first, the tail is
the shortest tasks and far stays True until none remain: modelled at 12,288 ranks that keeps
1 s tasks at 0.998 (0.991 with the last rounds on demand) for 0.9985 instead of 0.9999 on the
paper's 30 s tasks (scaling/simulate.py). Task ids travel in the payload, never
as tags (MPI only promises tags up to 32767). Every request gets exactly
one answer, and a worker asks max(1, prefetch) times up front, then exactly once per chunk
it receives and once per RETRY it sends (--retries), so both sides know it is finished when
all its requests are answered.

The Executor (tags 11-12; futures/dispatch.py on rank 0, futures/worker.py on the others).
Rank 0 sends ORDERS, each a pickled tuple whose first item is its kind, all on one tag so a
worker reads them in the order sent: START (an Executor begins: its number, initializer,
initargs, isolate), TASKS (a list of tasks, see Dataflow below), CANCEL (task ids the worker must
skip if it has not started them), END (the Executor ends: drop what is left, answer ENDED),
STOP (leave the worker loop). A worker sends REPLIES, a pickled tuple (Executor number, kind,
data): READY or BROKEN (its initializer, or its loop, failed: data says why) once per START;
RESULTS (codes, values: one code byte and one value per task, in the order the tasks came);
ENDED once per END. Results come in the order the tasks were sent, so they carry no ids.

Dataflow (tag 13; graph.py). A task of TASKS is (task id, pickled call, refs): refs None
for a map() call (its result travels back), else a tuple, one item per input of a dataflow call
(empty for a plain submit): (-1, value) inline, or (holder rank, task id) of a value kept on a
worker, or of a call earlier in the same TASKS (a call sent right behind its inputs: its
worker keeps their values, plain ones too, until it has run). A submit's result that is small and plain travels back (RAW: it is no bigger than a
reference); any other is kept by its worker, which answers HELD with rank 0's copy as a result travels
(code, data: decoded only if Future.result() asks). Rank 0 then sends
SEND (a list of (task id, target rank)) to a holder, which sends each value to its target on
DATA between calls: (Executor number, task id, True, value) or (..., False, why it is lost).
RELEASE (task ids) drops kept values whose Future
rank 0 dropped. Orders to one rank keep their order, so a value is never dropped before the
SEND or TASKS that needs it.

Start-up (tag 21; job.prepare): rank 0 sends FACTS to every other rank, one pickled message
each, once it has checked the tasks (World.from_rank_0).
"""
from array import array

REQUEST = 1
WORK = 2
RETRY = 3   # a worker hands failed tasks back: a pickled list of (task id, payload)
ORDERS = 11    # rank 0 -> an Executor's worker
REPLIES = 12   # an Executor's worker -> rank 0
DATA = 13      # a worker -> another worker: a kept value a dataflow call there needs
FACTS = 21     # rank 0 -> every rank at start-up: what it learned checking the tasks
START, TASKS, CANCEL, END, STOP, SEND, RELEASE = range(7)   # kinds of ORDERS
READY, BROKEN, RESULTS, ENDED = range(4)                # kinds of REPLIES
RAW, PICKLED, FAILED_CALL, SKIPPED, HELD = b"r"[0], b"p"[0], b"f"[0], b"s"[0], b"h"[0]   # codes of RESULTS
DONE, FAILED, BUSY, HALT = 0, 1, 2, 3   # fields of a request; HALT 1: the worker had to stop
FAR = 2   # ask ahead freely while more than FAR x workers tasks remain (any, with costs)


def request_buffer() -> array:
    """A zeroed request: [tasks done, tasks failed, busy seconds, halted]."""
    return array("d", [0.0, 0.0, 0.0, 0.0])
