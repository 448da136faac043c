"""Pipeline declarations and their plan: the tasks of every stage, the edges between them,
the checks of a bad graph, and the make-like "up to date" test.

A stage is transform (one task per input file, output named by a template of that input with
the placeholders of command tasks: {} {.} {/} {/.}), split (its inputs into a list of outputs,
one task), or merge (all its inputs into one output, one task). `input` is a path, a glob, a
list of those, an earlier stage (its outputs) or a list of stages; `after` names stages whose
tasks must all be done first (ruffus's @follows). A stage runs `run` (a function, or
"module:function", called as run(inputs, outputs) with a path or list for each as the stage
kind gives) or `command` (a shell template: {} etc. of its first input, {in} all inputs,
{out} its outputs, each shell-quoted).
"""
from __future__ import annotations

import glob
import importlib
import os
import shlex
import sys
import types
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any, Callable, Sequence, Union

from ..commands import render
from ..errors import exception_line

Inputs = Union[None, str, "Stage", Sequence[Union[str, "Stage"]]]

PIPELINE_MODULE = "mtcmpi_pipeline_file"   # the name a pipeline file is loaded under, on every rank
_declared: list["Stage"] = []     # the stages of the pipeline file being loaded, in file order


@dataclass
class Stage:
    """One declared stage; its tasks are made by plan()."""

    kind: str                      # transform, split or merge
    name: str
    input: Inputs
    output: Any                    # transform: template; split: list of paths; merge: a path
    run: Callable | str | None
    command: str | None
    after: list[str]

    def __repr__(self) -> str:
        return f"<stage {self.name}>"


@dataclass
class Task:
    """One task of a stage: its id ("stage:i"), files, and the tasks it waits for."""

    id: str
    stage: Stage
    number: int                    # 1-based within its stage ({#})
    inputs: list[str]
    outputs: list[str]
    waits: list[str] = field(default_factory=list)


def declare(kind: str, name: str, input: Inputs, output: Any, run: Callable | str | None,
            command: str | None, after: Sequence[str | Stage] | str | Stage | None) -> Stage:
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a stage name is a non-empty string without ':', not {name!r}")
    if (run is None) == (command is None):
        raise ValueError(f"stage {name}: give exactly one of run= (a function) or command= (a template)")
    follows = [after] if isinstance(after, (str, Stage)) else list(after or [])
    stage = Stage(kind, name, input, output, run, command,
                  [a.name if isinstance(a, Stage) else a for a in follows])
    _declared.append(stage)
    return stage


def transform(name: str, input: Inputs, output: str | Callable[[str], str], *, run: Callable | str | None = None,
              command: str | None = None, after: Any = None) -> Stage:
    """One task per input file; output is a template of it ('{.}.npy') or a function of it."""
    return declare("transform", name, input, output, run, command, after)


def split(name: str, input: Inputs, output: Sequence[str], *, run: Callable | str | None = None,
          command: str | None = None, after: Any = None) -> Stage:
    """One task making every path of output from the input(s) (input None: from nothing)."""
    return declare("split", name, input, list(output), run, command, after)


def merge(name: str, input: Inputs, output: str, *, run: Callable | str | None = None,
          command: str | None = None, after: Any = None) -> Stage:
    """One task making output from all the inputs; it waits for all of them."""
    return declare("merge", name, input, output, run, command, after)


class Plan:
    """The tasks of a pipeline in an order that runs inputs first, with their edges; made (and
    checked) identically on every rank, before anything runs."""

    def __init__(self, stages: list[Stage], problems: list[str]):
        self.stages = stages
        self.problems = list(problems)
        self.tasks: dict[str, Task] = {}
        self.maker: dict[str, str] = {}          # output path -> the task that makes it
        self.order: list[str] = []
        self.build()

    def build(self) -> None:
        names = [s.name for s in self.stages]
        for name in sorted({n for n in names if names.count(n) > 1}):
            self.problems.append(f"stage {name!r} is declared {names.count(name)} times")
        for stage in self.stages:
            self.problems += [f"stage {stage.name}: after={a!r} names no stage" for a in stage.after
                              if a not in names]
            resolve_function(stage, self.problems)
        for stage in self.stages:
            self.add_tasks(stage, self.input_files(stage))
        self.link()

    def stage_outputs(self, stage: Stage) -> list[str]:
        """The outputs of the one task of a split or merge."""
        return [stage.output] if stage.kind == "merge" else list(stage.output)

    def input_files(self, stage: Stage) -> list[str]:
        """The input paths of a stage: files, glob matches, and earlier stages' outputs."""
        items = stage.input if isinstance(stage.input, (list, tuple)) else [stage.input]
        files: list[str] = []
        for item in items:
            if item is None:
                continue
            if isinstance(item, Stage):
                files += [p for t in self.tasks.values() if t.stage is item for p in t.outputs]
            elif glob.has_magic(item):
                matched = sorted(glob.glob(item))
                if not matched:
                    self.problems.append(f"stage {stage.name}: input {item!r} matches no file")
                files += matched
            else:
                files.append(item)
        return files

    def add_tasks(self, stage: Stage, files: list[str]) -> None:
        if stage.kind == "transform":
            if not files:
                self.problems.append(f"stage {stage.name}: a transform with no input files")
            for i, path in enumerate(files):
                out = stage.output(path) if callable(stage.output) else render(stage.output, path, i + 1, str)
                self.add(Task(f"{stage.name}:{i}", stage, i + 1, [path], [out]))
        else:
            self.add(Task(f"{stage.name}:0", stage, 1, files, self.stage_outputs(stage)))

    def add(self, task: Task) -> None:
        if task.id in self.tasks:   # a stage declared twice: already reported
            return
        self.tasks[task.id] = task
        for path in task.outputs:
            other = self.maker.setdefault(path, task.id)
            if other != task.id:
                self.problems.append(f"stages {other.split(':')[0]} and {task.stage.name} both write {path}")

    def link(self) -> None:
        """Edges from each task to the makers of its inputs (and its after= stages), a check
        that unmade inputs exist, and a run order (or a cycle named)."""
        by_stage: dict[str, list[str]] = {}
        for tid, task in self.tasks.items():
            by_stage.setdefault(task.stage.name, []).append(tid)
        graph = {}
        for tid, task in self.tasks.items():
            waits = [self.maker[p] for p in task.inputs if p in self.maker]
            for path in task.inputs:
                if path not in self.maker and not os.path.exists(path):
                    self.problems.append(f"stage {task.stage.name}: input {path} is made by no "
                                         "stage and no such file exists")
            waits += [t for name in task.stage.after for t in by_stage.get(name, [])]
            task.waits = list(dict.fromkeys(w for w in waits if w != tid))
            graph[tid] = task.waits
            if tid in waits:
                self.problems.append(f"task {tid} reads its own output")
        try:
            self.order = list(TopologicalSorter(graph).static_order())
        except CycleError as exc:
            cycle = exc.args[1]
            self.problems.append("the stages form a cycle: " + " -> ".join(dict.fromkeys(
                t.split(":")[0] for t in cycle)) + f" (tasks {' -> '.join(cycle)})")


def resolve_function(stage: Stage, problems: list[str]) -> None:
    """Import a run="module:function" now, so a missing one is named before anything runs."""
    if not isinstance(stage.run, str):
        return
    module, _, name = stage.run.partition(":")
    try:
        stage.run = getattr(importlib.import_module(module), name)
    except Exception as exc:
        problems.append(f"stage {stage.name}: cannot import {stage.run!r}: {exception_line(exc)}")
        return
    if not callable(stage.run):
        problems.append(f"stage {stage.name}: {module}:{name} is a {type(stage.run).__name__}, not callable")


def load(path: str) -> Plan:
    """Run a pipeline file and plan its stages; Plan.problems lists what is wrong with it."""
    _declared.clear()
    problems = []
    module = types.ModuleType(PIPELINE_MODULE)
    module.__file__ = path
    sys.modules[PIPELINE_MODULE] = module
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        with open(path, "rb") as f:
            exec(compile(f.read(), path, "exec"), module.__dict__)
    except Exception as exc:
        problems.append(f"{path}: {exception_line(exc)}")
    stages = list(_declared)
    if not stages and not problems:
        problems.append(f"{path} declares no stage (use mtcmpi.pipeline.transform, split, merge)")
    return Plan(stages, problems)


def command_line(task: Task) -> str:
    """A command stage's shell command for one task."""
    first = task.inputs[0] if task.inputs else ""
    text = render(task.stage.command, first, task.number)
    joined = {"{in}": task.inputs, "{out}": task.outputs}
    for key, paths in joined.items():
        text = text.replace(key, " ".join(shlex.quote(p) for p in paths))
    return text


def call_arguments(task: Task) -> tuple[Any, Any]:
    """run(inputs, outputs) as the stage kind shapes them: a path or a list."""
    if task.stage.kind == "transform":
        return task.inputs[0], task.outputs[0]
    if task.stage.kind == "split":
        return (task.inputs[0] if len(task.inputs) == 1 else task.inputs or None), task.outputs
    return task.inputs, task.outputs[0]
