"""The rewrite passes, one per file, and the order they run in.

Each pass is a pure function ``Program -> Program``: it builds new nodes rather
than mutating, keeps sharing, and appends its name to ``program.applied`` when
it changed something (``dead_code`` appends ``dead_code (dropped a, b)``; see
:func:`dropped_names` and :func:`applied_passes`).

Order (:data:`RULES`):

1. ``dead_code`` first, so unused statements neither cost work in later passes
   nor count as extra uses of the nodes they read (uses decide fusion and chains).
2. ``scalar_folding`` before transposes: ``(A.T * 1) @ B`` must lose its ``* 1``
   before the transpose can become a product flag.
3. ``transpose_folding``: transposes become flags, ``(A@B).T`` becomes ``B.T@A.T``.
4. ``scalar_folding`` again: pushing a transpose down can expose nested scalings
   (``2 * (3 * (A@B)).T`` → ``2 * (3 * B.T@A.T)`` → ``6 * ...``).
5. ``cse`` once the forms are canonical (``X*2``/``2*X``, ``(A@B).T``/``B.T@A.T``
   merge), and before the chain pass, so a product computed twice is shared and
   therefore a chain boundary.
6. ``matrix_chain`` reorders the remaining single-use product chains.
7. ``cse`` again: reordering can create products that exist elsewhere
   (``A @ B @ v`` next to ``B @ v``).
8. ``gemm_fusion`` last: it hides products inside ``Gemm`` nodes, so it runs
   after the chain planner has seen them, and after the last CSE, so the
   "product used once" test sees the final sharing.

Every pass drops bindings to nodes it absorbed, so no later ``dead_code`` is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ...gcpause import paused_gc
from ..graph import Program
from ._common import run_local_passes
from .cse import cse
from .dead_code import applied_passes, dead_code, dropped_names
from .gemm_fusion import gemm_fusion
from .matrix_chain import matrix_chain
from .scalar_folding import scalar_folding
from .transpose_folding import transpose_folding

Pass = Callable[[Program], Program]

RULES: tuple[Pass, ...] = (
    dead_code,
    scalar_folding,
    transpose_folding,
    scalar_folding,
    cse,
    matrix_chain,
    cse,
    gemm_fusion,
)

PASSES: dict[str, Pass] = {
    p.__name__: p for p in (dead_code, transpose_folding, scalar_folding, cse, matrix_chain, gemm_fusion)
}


def optimize(program: Program, rules: Iterable[Pass] = RULES) -> Program:
    """Apply ``rules`` in order.

    Consecutive local passes (those with a ``local_rule``: scalar folding,
    transpose folding, CSE) run fused in one bottom-up traversal
    (:func:`._common.run_local_passes`), at the cost of one rebuild of the DAG
    instead of one per pass. That gives what running them one by one gives, with
    one known exception that costs nothing: CSE may share two equal leaves before
    a parent's transpose is folded, and the transpose then stays a product flag
    instead of being folded into both leaves (a generated-program test checks that
    a difference never costs more products or nodes). The cyclic garbage collector
    is paused meanwhile (see :mod:`jampi_dsl.gcpause`)."""
    with paused_gc():
        group: list[Pass] = []
        for rule in rules:
            if hasattr(rule, "local_rule"):
                group.append(rule)
                continue
            program = _run_group(program, group)
            group = []
            program = rule(program)
        program = _run_group(program, group)
    return program


def _run_group(program: Program, group: list[Pass]) -> Program:
    if not group:
        return program
    if len(group) == 1:
        return group[0](program)  # alone, a pass keeps its own shortcuts (CSE skips a program it made)
    result = run_local_passes(program, group)
    # Every node went through the group's last pass last, so its shortcut holds for the result
    # (CSE after the chain planner then costs nothing when the planner changed nothing).
    after = getattr(group[-1], "after", None)
    return after(result) if after is not None else result


__all__ = [
    "PASSES", "RULES", "applied_passes", "cse", "dead_code", "dropped_names", "gemm_fusion", "matrix_chain",
    "optimize", "scalar_folding", "transpose_folding",
]
