"""A program as a DAG: the outputs, the names bound along the way, and the
networkx view the planner, the runner and ``explain`` work from.

All traversals are iterative: a generated 10,000-statement program can be a
chain 10,000 nodes deep, far past Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from .ir import BINARY_OPS, OUTPUT_NODES, Node


@dataclass(frozen=True)
class Program:
    """What runs: ``outputs`` (save/print/result nodes, in program order) and, for
    explain, the names the program bound to nodes. Parameters are already substituted."""

    outputs: tuple[Node, ...]
    bindings: tuple[tuple[str, Node], ...] = ()
    params: tuple[tuple[str, Any], ...] = ()
    source_name: str = "<program>"
    applied: tuple[str, ...] = field(default=())  # names of the rewrites that changed something

    def roots(self) -> list[Node]:
        # Bound names are roots too, so dead statements stay in the DAG until the DCE pass.
        return [*self.outputs, *(node for _, node in self.bindings)]

    def nodes(self) -> list[Node]:
        """Every node in the program, children before parents (a stable order)."""
        return postorder(self.roots())

    def live_nodes(self) -> list[Node]:
        """The nodes some output depends on: what actually runs."""
        return postorder(self.outputs)

    def graph(self) -> nx.DiGraph:
        return to_graph(self.roots())

    def names(self) -> dict[int, str]:
        """Node uid → the last name bound to it (for explain and error messages)."""
        return {node.uid: name for name, node in self.bindings}

    def with_outputs(self, outputs: Iterable[Node], bindings=None, applied: str | None = None) -> Program:
        changes: dict[str, Any] = {"outputs": tuple(outputs)}
        if bindings is not None:
            changes["bindings"] = tuple(bindings)
        if applied:
            changes["applied"] = (*self.applied, applied)
        return replace(self, **changes)


def postorder(
    roots: Iterable[Node], seen: set[int] | None = None, uses: dict[int, int] | None = None
) -> list[Node]:
    """Children before parents, roots in order. Nodes whose uid is in ``seen`` are skipped
    (and ``seen`` is extended); ``uses``, if given, counts every child edge of the nodes visited."""
    order: list[Node] = []
    seen = set() if seen is None else seen
    for root in roots:
        if root.uid in seen:
            continue
        seen.add(root.uid)
        stack: list[tuple[Node, Iterator[Node]]] = [(root, iter(root.children))]
        while stack:
            node, it = stack[-1]
            child = next(it, None)
            if child is None:
                stack.pop()
                order.append(node)
                continue
            uid = child.uid
            if uses is not None:
                uses[uid] = uses.get(uid, 0) + 1
            if uid not in seen:
                seen.add(uid)
                stack.append((child, iter(child.children)))
    return order


def topological(
    roots: Iterable[Node], seen: set[int] | None = None, uses: dict[int, int] | None = None
) -> list[Node]:
    """What :func:`postorder` visits, in another topological order: ascending uid.

    A node is immutable and made after its children, and uids count up, so a child's
    uid is always smaller than its parent's and sorting by uid puts children first.
    That makes this a plain reachability sweep and one sort in C, several times
    cheaper than the depth-first walk (the rewrite passes sweep a 10,000-statement
    program's DAG several times). Display and numbering keep :func:`postorder`."""
    seen = set() if seen is None else seen
    found: dict[int, Node] = {}
    stack: list[Node] = []
    for root in roots:
        uid = root.uid
        if uid not in seen:
            seen.add(uid)
            found[uid] = root
            stack.append(root)
    while stack:
        node = stack.pop()
        for child in node._get_children(node):  # (the `children` property is one call more per node)
            uid = child.uid
            if uses is not None:
                uses[uid] = uses.get(uid, 0) + 1
            if uid not in seen:
                seen.add(uid)
                found[uid] = child
                stack.append(child)
    return [found[uid] for uid in sorted(found)]


def to_graph(roots: Iterable[Node]) -> nx.DiGraph:
    """Edges run child → parent (data flow); edge attribute ``arg`` is the argument position."""
    graph = nx.DiGraph()
    for node in postorder(roots):
        graph.add_node(node.uid, node=node)
        for position, child in enumerate(node.children):
            graph.add_edge(child.uid, node.uid, arg=position)
    return graph


def consumers(program: Program) -> dict[int, int]:
    """How many distinct parents use each node (an output counts as a use)."""
    counts: dict[int, int] = {}
    for node in program.nodes():
        for child in {c.uid: c for c in node.children}.values():
            counts[child.uid] = counts.get(child.uid, 0) + 1
    return counts


Rewrite = Callable[[Node], Node]


def rewrite(program: Program, fn: Rewrite, name: str) -> Program:
    """Rebuild the DAG bottom-up, applying ``fn`` to each node after its children
    were rewritten. Sharing is preserved (each node is rewritten once). Bindings
    follow their nodes. ``name`` is recorded in ``applied`` if anything changed."""
    mapping: dict[int, Node] = {}
    for node in program.nodes():
        new_children = tuple(mapping[c.uid] for c in node.children)
        rebuilt = node.with_children(new_children)
        mapping[node.uid] = fn(rebuilt)
    outputs = [mapping[o.uid] for o in program.outputs]
    bindings = [(n, mapping[node.uid]) for n, node in program.bindings]
    changed = any(mapping[o.uid] is not o for o in program.nodes())
    return program.with_outputs(outputs, bindings, applied=name if changed else None)


def is_output(node: Node) -> bool:
    return isinstance(node, OUTPUT_NODES)


# ---------------------------------------------------------------- text form


def _format_attr(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    return repr(value)


def describe(node: Node, ref: Callable[[Node], str] | None = None) -> str:
    """One node as text: ``matmul(%1, %2, trans_a=True)``; used by dumps and explain."""
    ref = ref or (lambda n: f"%{n.uid}")
    parts = [ref(c) for c in node.children]
    attrs = node.attrs()
    op = node.op
    if "operator" in attrs:  # binary/unary/reduce read better as the operation itself
        operator = attrs.pop("operator")
        op = BINARY_OPS.get(operator, operator)
    for key, value in attrs.items():
        if key in ("trans_a", "trans_b") and not value:
            continue
        if key == "path":
            value = value.rsplit("/", 1)[-1]
        if key == "options":
            value = tuple((k, v) for k, v in value if v not in (None, False))
            if not value:
                continue
        parts.append(f"{key}={_format_attr(value)}")
    return f"{op}({', '.join(parts)})"


def dump(program: Program) -> str:
    """A stable text form of the DAG (numbered in post-order): what golden fixtures compare."""
    numbers: dict[int, int] = {}
    lines = []
    names = program.names()
    for node in program.nodes():
        numbers[node.uid] = len(numbers)
        text = describe(node, lambda n: f"%{numbers[n.uid]}")
        suffix = f"  # {names[node.uid]}" if node.uid in names else ""
        type_text = "" if node.type.kind == "output" else f" : {node.type}"
        lines.append(f"%{numbers[node.uid]} = {text}{type_text}{suffix}")
    return "\n".join(lines) + "\n"
