"""ruffus-style pipelines of stages over files, run in one MPI job: `mtcmpi pipeline FILE.py`.

A pipeline file declares its stages with the functions below (in file order):

    from mtcmpi.pipeline import split, transform, merge
    parts = split("parts", input="data/all.txt", output=[f"work/p{i}.txt" for i in range(8)],
                  run=cut)                                  # one input into many outputs
    counts = transform("counts", input=parts, output="{.}.count", run="mymod:count")
    total = merge("total", input=counts, output="work/total.txt",
                  command="cat {in} > {out}")               # many into one

stages.py holds the declarations and the plan (tasks, edges, checks, up-to-date); run.py runs
a plan over an mtcmpi.Executor (rank 0 drives); record.py writes the per-task record.
"""
__all__ = ["split", "transform", "merge"]


def __getattr__(name: str):
    """The declarations, imported on first use (the CLI imports this package for --help)."""
    if name in __all__:
        from . import stages
        return getattr(stages, name)
    raise AttributeError(f"module 'mtcmpi.pipeline' has no attribute {name!r}")
