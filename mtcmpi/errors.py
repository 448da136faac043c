"""The errors mtcmpi tells users about, and the exit codes every rank leaves with."""

EXIT_OK = 0             # every task succeeded
EXIT_TASKS_FAILED = 1   # the run finished, some tasks failed (the summary says which and why)
EXIT_USAGE = 2          # bad input: target, params file, options (one line on rank 0 says what)
EXIT_INTERNAL = 3       # an unexpected error inside mtcmpi; the job was aborted
EXIT_STOPPED = 75       # stopped early by a signal or the walltime: run the same command to resume
                        # (75 is EX_TEMPFAIL in sysexits.h: "try again later")


class UsageError(Exception):
    """Bad input from the user: printed as one line on rank 0, every rank exits EXIT_USAGE."""


def exception_line(exc: BaseException) -> str:
    """'Type: message' of an exception, even one whose __str__ raises."""
    import traceback   # here: a run without errors never needs it

    return traceback.format_exception_only(type(exc), exc)[-1].strip()
