"""The master/worker messages of self-scheduling.

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
"""
from array import array

REQUEST = 1
WORK = 2
RETRY = 3   # a worker hands failed tasks back: a pickled list of (task id, payload)
DONE, FAILED, BUSY, HALT = 0, 1, 2, 3   # fields of a request; HALT 1: the worker had to stop
FAR = 2   # ask ahead freely while more than FAR x workers tasks remain (any, with costs)


def request_buffer() -> array:
    """A zeroed request: [tasks done, tasks failed, busy seconds, halted]."""
    return array("d", [0.0, 0.0, 0.0, 0.0])
