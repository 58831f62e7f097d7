"""How long every value of a physical plan lives, decided from the plan alone.

A distributed value is either *materialised* (its blocks computed once,
persisted to memory and disk, and its lineage cut) or *lazy* (a recipe that
its one reader computes as part of its own job). A lazy value reads its
inputs' blocks when its reader finally runs a job, so an input's blocks must
outlive every lazy value built on them: a value is released after the last
step that runs a job reading it, directly or through lazy values.

Materialised: a distributed matrix with two or more readers (else each
reader's job would recompute its whole history), except a source (a
generator or a file) whose blocks the readers' tasks make themselves; and a
lazy value whose chain of lazy inputs has grown too deep (``MAX_LAZY_WORKERS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ir
from .methods import DISTRIBUTED


@dataclass(frozen=True)
class Lifetime:
    """When a step's value is computed for good and when it is freed (indices into the plan's steps)."""

    materialize: bool  # persisted (memory and disk), computed now, lineage cut
    release_after: int  # the value and everything its step keeps on Spark are freed after this step


_SOURCES = (ir.Generate, ir.Load, ir.Input)  # (an Input's value is kept by whoever exported it)
# A lazy blockwise step that combines two distributed inputs runs one Python worker per task for
# itself and one for each lazy input it pipelines, at once. A chain of them (w = w + a * p, run
# for every iteration) would need ever more workers per task: past this many, it is materialised.
MAX_LAZY_WORKERS = 3


def _lazy(step, materialize: bool) -> bool:
    """A value its reader's job computes: a blockwise distributed matrix not materialised (the
    product methods, and solve/lstsq, compute their result in their own step), and a distributed
    ``C + A @ B`` whose addend is added blockwise after the product's stage, when read."""
    node = step.node
    if materialize or not node.type.is_matrix:
        return False
    if step.method == "spark":
        return not isinstance(node, ir.Solve)
    return step.method in DISTRIBUTED and isinstance(node, ir.Gemm) and node.beta != 0.0 and not step.collect


def is_lazy(step) -> bool:
    """Whether a planned step's value is computed by its reader's job (for explain)."""
    return _lazy(step, step.lifetime.materialize)


def lifetimes(steps) -> list[Lifetime]:
    """One :class:`Lifetime` per step, for ``steps`` in topological order."""
    index = {step.node.uid: i for i, step in enumerate(steps)}
    readers: list[list[int]] = [[] for _ in steps]
    for i, step in enumerate(steps):
        for uid in {c.uid for c in step.node.children}:
            readers[index[uid]].append(i)
    # A value handed to a later segment (an Export reads it) outlives this plan's inputs, and a
    # loop may read it every iteration: it is materialised too (a generator or a file included,
    # not made again per read), so the previous iteration's blocks can be freed.
    exported = {index[s.node.x.uid] for s in steps if isinstance(s.node, ir.Export)}
    materialize = [
        step.method in DISTRIBUTED and not step.collect and step.node.type.is_matrix
        and not isinstance(step.node, ir.Input)
        and ((len(readers[i]) >= 2 and not isinstance(step.node, _SOURCES)) or i in exported)
        for i, step in enumerate(steps)
    ]
    _bound_lazy_chains(steps, index, materialize)
    # A job runs at a step that is not lazy; a lazy step's inputs are read when its own readers run.
    needed_until = list(range(len(steps)))
    for i in reversed(range(len(steps))):
        for r in readers[i]:
            until = needed_until[r] if _lazy(steps[r], materialize[r]) else r
            needed_until[i] = max(needed_until[i], until)
    return [Lifetime(materialize[i], needed_until[i]) for i in range(len(steps))]


def _bound_lazy_chains(steps, index: dict[int, int], materialize: list[bool]) -> None:
    """Materialise lazy steps whose job would run more than ``MAX_LAZY_WORKERS`` Python workers
    per task (each lazy distributed input of a blockwise combination brings its own)."""
    workers = [0] * len(steps)
    for i, step in enumerate(steps):
        if not _lazy(step, materialize[i]) or isinstance(step.node, _SOURCES):
            continue
        inputs = [index[c.uid] for c in {c.uid: c for c in step.node.children}.values()
                  if c.type.is_matrix and steps[index[c.uid]].method in DISTRIBUTED]
        upstream = [workers[k] for k in inputs]
        workers[i] = 1 + sum(upstream) if len(inputs) >= 2 else max(upstream, default=0) or 1
        if workers[i] > MAX_LAZY_WORKERS:
            materialize[i] = True
            workers[i] = 0
