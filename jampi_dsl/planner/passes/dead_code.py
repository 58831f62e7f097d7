"""Dead-code elimination: drop the bindings (named statements) whose node does
not reach any output.

Nodes only exist through the program's roots, so once a dead binding is gone so
is everything it alone used. What was dropped is recorded in ``applied`` as
``dead_code (dropped a, b)``; :func:`dropped_names` reads it back for explain.
A name rebound later and dropped only in its earlier binding is written with
the line of that binding (``X (line 3)``) so it is not mistaken for the live one.
"""

from __future__ import annotations

from ..graph import Program
from ._common import Walk, remember

NAME = "dead_code"
_PREFIX = f"{NAME} (dropped "


def dead_code(program: Program) -> Program:
    walk = Walk.of(program)
    live = walk.live
    kept: list[tuple[str, object]] = []
    dropped: list[tuple[str, object]] = []
    for name, node in program.bindings:
        (kept if node.uid in live else dropped).append((name, node))
    if not dropped:
        return program
    kept_names = {name for name, _ in kept}
    labels: dict[str, None] = {}  # ordered and without repeats
    for name, node in dropped:
        label = name
        if name in kept_names and node.span is not None:
            label = f"{name} (line {node.span.line})"
        labels[label] = None
    result = program.with_outputs(program.outputs, kept, applied=f"{_PREFIX}{', '.join(labels)})")
    return remember(result, "walk", walk.live_only())


def dropped_names(program: Program) -> list[str]:
    """The bindings ``dead_code`` dropped, as recorded in ``program.applied``."""
    out: list[str] = []
    for entry in program.applied:
        if entry.startswith(_PREFIX):
            out.extend(entry[len(_PREFIX) : -1].split(", "))
    return out


def applied_passes(program: Program) -> list[str]:
    """The names of the passes that changed something, in order (without details)."""
    return [entry.split(" (", 1)[0] for entry in program.applied]
