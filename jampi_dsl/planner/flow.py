"""Programs with blocks: straight-line segments joined by loops and branches.

The builder cuts a program at every loop and every branch decided at run time.
Each cut leaves a :class:`Segment`, a straight-line DAG planned like any
version-1 program, whose leaves may be :class:`~.ir.Input` (a value kept under
a slot by an earlier segment) and whose :class:`~.ir.Export` outputs keep
values for later ones. A loop body is planned once, for the carried shapes,
and run as often as the loop says: nothing is unrolled.

Loop-invariant work is hoisted: a node of a loop body that depends on no
value the loop changes moves into a segment run once before the loop (found
with networkx: everything downstream of a changing input varies).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import networkx as nx

from . import ir
from .graph import Program, describe
from .methods import DISTRIBUTED
from .physical import PhysicalPlan, lower


@dataclass
class Segment:
    program: Program
    label: str = ""  # what explain calls it ("hoisted out of the loop at line 7")
    plan: PhysicalPlan | None = None  # set by lower_flow

    def exported_slots(self) -> list[str]:
        return [o.slot for o in self.program.outputs if isinstance(o, ir.Export)]


@dataclass
class Loop:
    kind: str  # "for" | "while"
    text: str  # the header as written: "for i in range(iters)"
    line: int
    body: list
    var_slot: str | None = None  # for: the loop variable's slot
    bounds: tuple[Any, ...] = ()  # for: start, stop, step (a number, or the slot a header segment fills)
    header: Segment | None = None  # for: computes bounds that are not known before the run
    cond: Segment | None = None  # while: computes the condition before each iteration
    cond_slot: str | None = None  # None: a condition known before the run (``always``)
    always: bool = True
    watch: tuple[tuple[str, str], ...] = ()  # (name, slot) of the condition's scalars, for progress
    hoisted: tuple[str, ...] = ()  # what moved out of the body (explain)
    span: Any = None  # the range() call or the condition, for run-time errors


@dataclass
class Branch:
    text: str
    line: int
    cases: list  # (condition Segment, condition slot, body items)
    orelse: list | None = None
    span: Any = None


@dataclass
class BreakItem:
    line: int


@dataclass
class FlowProgram:
    body: list
    params: tuple[tuple[str, Any], ...] = ()
    source_name: str = "<program>"

    def segments(self) -> list[Segment]:
        return list(_segments(self.body))


def _segments(items: list):
    """Every segment, in program order, nested ones included."""
    for item in items:
        if isinstance(item, Segment):
            yield item
        elif isinstance(item, Loop):
            for part in (item.header, item.cond):
                if part is not None:
                    yield part
            yield from _segments(item.body)
        elif isinstance(item, Branch):
            for cond, _slot, body in item.cases:
                if cond is not None:
                    yield cond
                yield from _segments(body)
            if item.orelse is not None:
                yield from _segments(item.orelse)


def exported_slots(items: list) -> set[str]:
    return {slot for segment in _segments(items) for slot in segment.exported_slots()}


# ---------------------------------------------------------------- hoisting


_hoist_ids = itertools.count()


def hoist(body: list, varying: set[str], line: int) -> tuple[Segment | None, tuple[str, ...]]:
    """Move the loop-invariant work of ``body``'s top-level segments into a segment to run
    once before the loop. ``varying``: the slots the loop writes (and its variable's)."""
    exports: list[ir.Export] = []
    hoisted: list[str] = []
    for segment in body:
        if not isinstance(segment, Segment):
            continue
        program = segment.program
        graph = program.graph()
        nodes = {uid: data["node"] for uid, data in graph.nodes(data=True)}
        variant: set[int] = set()
        for uid, node in nodes.items():
            if isinstance(node, ir.Input) and node.slot in varying and uid not in variant:
                variant.add(uid)
                variant.update(nx.descendants(graph, uid))
        names = program.names()
        replace: dict[int, ir.Node] = {}
        for uid, node in nodes.items():
            if uid in variant or not _worth_hoisting(node):
                continue
            users = [nodes[u] for u in graph.successors(uid)]
            if not any(u.uid in variant or isinstance(u, ir.OUTPUT_NODES) for u in users):
                continue  # part of a larger invariant expression: that one moves
            slot = f"%hoisted{next(_hoist_ids)}"
            text = describe(node, partial(_ref, names))
            label = names.get(uid) or text
            replace[uid] = ir.Input(slot, node.type, label, span=node.span)
            exports.append(ir.Export(node, slot, span=node.span))
            hoisted.append(f"{label} = {text}" if uid in names else text)
        if replace:
            segment.program = _replaced(program, replace)
    if not exports:
        return None, ()
    return Segment(Program(tuple(exports)), label=f"hoisted out of the loop at line {line}"), tuple(hoisted)


def _ref(names: dict[int, str], node: ir.Node) -> str:
    return names.get(node.uid) or (node.name if isinstance(node, ir.Input) else node.op)


def _worth_hoisting(node: ir.Node) -> bool:
    if isinstance(node, (ir.Input, ir.Const, ir.Generate, *ir.OUTPUT_NODES)):
        return False
    if isinstance(node, ir.Transpose) and isinstance(node.x, (ir.Input, ir.Generate)):
        return False  # folded into the product that reads it
    return node.type.is_matrix or isinstance(node, ir.Reduce)


def _replaced(program: Program, replace: dict[int, ir.Node]) -> Program:
    mapping: dict[int, ir.Node] = {}
    for node in program.nodes():
        if node.uid in replace:
            mapping[node.uid] = replace[node.uid]
            continue
        mapping[node.uid] = node.with_children(tuple(mapping[c.uid] for c in node.children))
    return program.with_outputs([mapping[o.uid] for o in program.outputs],
                                [(n, mapping[v.uid]) for n, v in program.bindings])


# ---------------------------------------------------------------- lowering


@dataclass
class FlowPlan:
    """A planned program with blocks: every segment lowered once. Offers what the CLI reads of
    a :class:`PhysicalPlan` (``steps``, ``methods_used``, ``program`` for names and outputs)."""

    flow: FlowProgram
    resources: Any
    steps: tuple = ()
    program: Program = field(default_factory=lambda: Program(()))

    @property
    def methods_used(self) -> set[str]:
        return {s.method for s in self.steps}

    def plans(self) -> list[PhysicalPlan]:
        return [s.plan for s in self.flow.segments()]


def lower_flow(flow: FlowProgram, optimize, resources, executor: str = "auto",
               forced_by: str | None = None) -> FlowPlan:
    """Plan every segment once. A slot is distributed when the segment that fills it leaves its
    value on the executors; a loop body is planned again until its carried slots agree. Then
    once more, with the slots that distributed steps read made on the executors in the first
    place (a matrix a loop multiplies on Spark is not shipped from the driver every iteration)."""
    wanted = _lower_all(flow, optimize, resources, executor, forced_by, frozenset())
    if wanted:
        _lower_all(flow, optimize, resources, executor, forced_by, frozenset(wanted))
    plans = [s.plan for s in flow.segments()]
    steps = tuple(step for plan in plans for step in plan.steps)
    outputs = tuple(o for plan in plans for o in plan.program.outputs if not isinstance(o, ir.Export))
    bindings = tuple(b for plan in plans for b in plan.program.bindings)
    applied = tuple(dict.fromkeys(name for plan in plans for name in plan.program.applied))
    program = Program(outputs, bindings, flow.params, flow.source_name, applied)
    return FlowPlan(flow, resources, steps, program)


def _lower_all(flow: FlowProgram, optimize, resources, executor, forced_by, exports: frozenset[str]) -> set[str]:
    """Lower every segment; returns the slots some distributed step reads."""
    distributed: set[str] = set()
    wanted: set[str] = set()

    def plan_segment(segment: Segment) -> None:
        segment.plan = plan = lower(optimize(segment.program), resources, executor, forced_by,
                                    distributed_inputs=frozenset(distributed), distributed_exports=exports,
                                    collect_vectors=True)
        for step in plan.steps:
            node = step.node
            if isinstance(node, ir.Export):
                if plan.step(node.x).method in DISTRIBUTED and node.x.type.is_matrix:
                    distributed.add(node.slot)
                else:
                    distributed.discard(node.slot)
            elif step.method in DISTRIBUTED:
                shipped = getattr(node, step.ships) if step.ships else None  # a broadcast's small side
                wanted.update(c.slot for c in node.children
                              if isinstance(c, ir.Input) and c.type.is_matrix and c is not shipped)

    def plan_items(items: list) -> None:
        for item in items:
            if isinstance(item, Segment):
                plan_segment(item)
            elif isinstance(item, Loop):
                for part in (item.header, item.cond):
                    if part is not None:
                        plan_segment(part)
                for _ in range(3):  # until the carried slots' placements stop changing
                    before = set(distributed)
                    plan_items(item.body)
                    if item.cond is not None:
                        plan_segment(item.cond)
                    distributed.update(before)
                    if distributed == before:
                        break
            elif isinstance(item, Branch):
                entry, after = set(distributed), set()
                for cond, _slot, body in item.cases:
                    distributed.clear()
                    distributed.update(entry)
                    if cond is not None:
                        plan_segment(cond)
                    plan_items(body)
                    after |= distributed
                distributed.clear()
                distributed.update(entry)
                if item.orelse is not None:
                    plan_items(item.orelse)
                distributed.update(after)

    plan_items(flow.body)
    return wanted
