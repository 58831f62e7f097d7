"""Common-subexpression elimination: one node per structural key.

Bottom-up, so children are merged before their parents are compared; two nodes
merge when they have the same class, attributes and (merged) children. ``+``
and ``*`` are commutative in IEEE arithmetic, so ``A + B`` and ``B + A`` merge
too. Outputs never merge with each other (two prints print twice). Generators
are deterministic (``random(4, 4, seed=1)`` is the same matrix every time) and
two loads of one file read the same data, so both merge.

Children are merged before their parents (the rebuilder guarantees it, also
for new nodes the rules before this one make when ``optimize`` fuses them).
"""

from __future__ import annotations

from dataclasses import fields

from ..graph import Program, is_output
from ..ir import Binary, Const, Node
from ._common import LocalRule, Rebuilder, local_pass, recall, remember

NAME = "cse"
_COMMUTATIVE = ("+", "*")
_ATTRS: dict[type, tuple[str, ...]] = {}


def _make_rule() -> LocalRule:
    table: dict[tuple, Node] = {}
    canonical: set[int] = set()  # uids of nodes that are their key's representative

    def intern(node: Node, rb: Rebuilder) -> Node:
        if node.uid in canonical or is_output(node):
            return node
        key = structural_key(node)
        first = table.get(key)
        if first is None or first.uid in rb.consumed:
            table[key] = node
            canonical.add(node.uid)
            return node
        for child in node.children:
            rb.release(child)  # the duplicate is gone, and its uses with it
        return first

    return intern


_cse = local_pass(NAME, _make_rule)


def cse(program: Program) -> Program:
    if recall(program, NAME):
        return program  # the output of a CSE run that nothing has changed since
    return remember(_cse(program), NAME)


cse.local_rule = _make_rule  # type: ignore[attr-defined]
cse.after = lambda program: remember(program, NAME)  # type: ignore[attr-defined]


def structural_key(node: Node) -> tuple:
    """``node.key()``, except that ``+``/``*`` ignore operand order and a constant
    is keyed by its repr (``0.0 == -0.0`` in Python, but they are different)."""
    cls = type(node)
    if cls is Const:
        return ("Const", repr(node.value))
    if cls is Binary:
        a, b = node.a.uid, node.b.uid
        if node.operator in _COMMUTATIVE and b < a:
            a, b = b, a
        return ("Binary", node.operator, a, b)
    if cls.attrs is not Node.attrs:
        return node.key()  # a node that defines its own attributes (Literal)
    names = _ATTRS.get(cls)
    if names is None:
        names = tuple(f.name for f in fields(cls) if f.name not in ("span", "type", "uid", *cls.CHILDREN))
        _ATTRS[cls] = names
    return (cls.__name__, tuple(getattr(node, n) for n in names), tuple(c.uid for c in node.children))
