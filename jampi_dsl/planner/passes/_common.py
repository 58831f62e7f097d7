"""What the rewrite passes share: a fast walk (topological order, use counts, liveness),
and a bottom-up rebuilder that knows which rebuilt nodes have exactly one user.

A rule may only restructure a node nobody else uses ("exclusive"): turning a
shared ``A @ B`` into ``B.T @ A.T`` for one consumer would compute the product
twice. Counting uses on the original DAG is not enough once rules return
existing nodes (``A.T.T -> A`` gives ``A`` a new parent) or CSE merges nodes,
so the rebuilder keeps user counts for the program being built.

Speed matters here (a 10,000-statement program is a DAG tens of thousands of
nodes deep, rebuilt by several passes), so each pass walks the program once
(``graph.topological``, counting uses on the way).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ..graph import Program, topological
from ..ir import Node


def reachable(roots: Iterable[Node]) -> set[int]:
    return {node.uid for node in topological(roots)}


class Walk:
    """One traversal of a program: every node (children first; ascending uid), the
    uses of each (with multiplicity: ``A @ A`` uses ``A`` twice; binding a name
    is not a use, printing is) and the uids that reach an output.

    :meth:`of` remembers the walk of the most recent program (by identity), and
    :func:`finish` hands the next pass the walk of the program it built, so a
    pass that changes nothing costs one traversal and the next pass none."""

    def __init__(self, nodes: list[Node], live: set[int], uses: dict[int, int], live_uses: dict[int, int]):
        self.nodes = nodes  # the live nodes first, then those only dead bindings reach
        self.live = live
        self.uses = uses
        self.live_uses = live_uses  # the uses by live nodes alone

    @classmethod
    def of(cls, program: Program) -> Walk:
        memo = _memo(program)
        walk = memo.get("walk")
        if walk is None:
            walk = cls.over(program.outputs, [n for _, n in program.bindings])
            memo["walk"] = walk
        return walk

    @classmethod
    def over(cls, outputs: Iterable[Node], bound: Iterable[Node]) -> Walk:
        seen: set[int] = set()
        uses: dict[int, int] = {}
        live_nodes = topological(outputs, seen, uses)
        live, live_uses = set(seen), dict(uses)
        return cls(live_nodes + topological(bound, seen, uses), live, uses, live_uses)

    def live_only(self) -> Walk:
        """This walk without the nodes only dead bindings reach (what ``dead_code`` leaves)."""
        return Walk(self.nodes[: len(self.live)], self.live, self.live_uses, self.live_uses)


_memo_slot: tuple[weakref.ref, dict[str, Any]] | None = None


def _memo(program: Program) -> dict[str, Any]:
    """Facts about the most recently seen program (passes run one after another).
    One slot, read and replaced whole, so concurrent planners only miss, never
    mix; emptied when its program is freed, so it keeps no DAG alive."""
    global _memo_slot
    slot = _memo_slot
    if slot is not None and slot[0]() is program:
        return slot[1]
    data: dict[str, Any] = {}
    _memo_slot = (weakref.ref(program, _forget), data)
    return data


def _forget(ref: weakref.ref) -> None:
    global _memo_slot
    slot = _memo_slot
    if slot is not None and slot[0] is ref:
        _memo_slot = None


def remember(program: Program, key: str, value: Any = True) -> Program:
    _memo(program)[key] = value
    return program


def recall(program: Program, key: str) -> Any:
    return _memo(program).get(key)


def use_counts(program: Program) -> dict[int, int]:
    return Walk.of(program).uses


class Rebuilder:
    """Rebuild a program bottom-up, each node once (so sharing is kept), after
    its children: :meth:`run` for a rule that also looks at the original node,
    :meth:`run_local` for local rules (several passes in one traversal).

    It keeps a count of the users each rebuilt node has in the program being
    built, so rules can ask :meth:`exclusive` before restructuring a node. Rules
    keep the count right by calling :meth:`adopt` when they use a grandchild
    directly, :meth:`retain`/:meth:`release` when they add or drop a use of an
    existing node some other way. Counts err on the high side (a node may look
    shared when it is not), never the low side."""

    def __init__(self, program: Program):
        self.program = program
        self.walk = Walk.of(program)
        self.uses = self.walk.uses
        self.mapping: dict[int, Node] = {}  # original uid -> replacement
        self._images: set[int] = set()  # uids of nodes some original became
        self._refs: dict[int, int] = {}  # uid -> users in the new program (a fresh node starts at 1)
        self._moved: set[int] = set()  # adopted while rewriting the current node
        # Exclusive nodes a rule restructured away: dead, so CSE must not merge new
        # nodes into them (that would count users for them, while their only
        # users are the new ones).
        self.consumed: set[int] = set()

    # ------------------------------------------------------------ user counts

    def exclusive(self, node: Node) -> bool:
        """True if ``node`` (a rebuilt node) has exactly one user in the program being built."""
        return self._refs.get(node.uid, 1) == 1

    def retain(self, node: Node) -> Node:
        """A rule gave ``node`` one more user."""
        self._refs[node.uid] = self._refs.get(node.uid, 1) + 1
        return node

    def release(self, node: Node) -> None:
        """A rule dropped one use of ``node`` (its user was merged away)."""
        self._refs[node.uid] = self._refs.get(node.uid, 1) - 1

    def is_final(self, node: Node) -> bool:
        """True if ``node`` is what some original node became (done, maybe shared)."""
        return node.uid in self._images

    def adopt(self, parent: Node, node: Node) -> Node:
        """A rule uses ``node``, a child of ``parent``, directly, bypassing ``parent``.
        If ``parent`` lives on for other users, ``node`` now has one more; if not,
        ``parent`` is dead (consumed) and the use just moved."""
        if self.exclusive(parent):
            self.consumed.add(parent.uid)
            self._moved.add(node.uid)
        else:
            self.retain(node)
        return node

    # ------------------------------------------------------------ the walk

    def _rebuilt(self, node: Node) -> Node:
        children = node._get_children(node)
        if children:
            mapping = self.mapping
            new = tuple([mapping[c.uid] for c in children])
            if new != children:  # tuples compare elements by identity first; nodes have no __eq__
                return node.replacing_children(new)
        return node

    def _record(self, node: Node, rebuilt: Node, out: Node) -> None:
        """``node`` (original) became ``out``: ``out``'s users are now also ``node``'s."""
        self.mapping[node.uid] = out
        uid, users = out.uid, self.uses.get(node.uid, 0)
        refs = self._refs
        if out is rebuilt:
            refs[uid] = users
        elif uid not in self._images:
            refs[uid] = refs.get(uid, 1) - 1 + users  # a new node, so far used only where it was made
        elif uid in self._moved or any(c is out for c in rebuilt.children):
            refs[uid] += users - 1  # x*1 -> x: the use by the rewritten node passes to its users
        else:
            refs[uid] += users
        self._images.add(uid)
        self._moved.clear()

    def run(self, fn: Callable[[Node, Node, Rebuilder], Node], name: str) -> Program:
        """One rule that may look at the original node as well as the rebuilt one.

        Such a rule decides from the original program (``uses``, the originals'
        structure) and reads ``mapping`` for the rebuilt children; it must not ask
        :meth:`exclusive`, because no user counts of the new program are kept here
        (keeping them was a fifth of this loop's time)."""
        changed = False
        mapping = self.mapping
        self._refs = None  # type: ignore[assignment]  (so a misplaced exclusive() fails loudly)
        for node in self.walk.nodes:
            rebuilt = self._rebuilt(node)
            out = fn(node, rebuilt, self)
            if out is not rebuilt and out.type != node.type:
                out = rebuilt  # a rule must never change a type; keep the safe form
            changed = changed or out is not node
            mapping[node.uid] = out
        if not changed:
            return self.program
        return finish(self.program, self.mapping, (name,), self.walk.live)

    def run_local(self, steps: list[tuple[str, LocalRule, frozenset | None]]) -> Program:
        """Local rules ``rule(node, rb) -> node`` (several passes in one traversal), each
        step ``(pass name, rule, node classes the rule can change or None for any)``.

        Each node goes through the rules in order, once its children are done.
        When a rule makes new inner nodes (``(2 * (A@B)).T`` → ``2 * (B.T@A.T)``),
        those go through the later rules too, bottom-up, before the node does:
        exactly what running the passes one after another would do."""
        self._steps = [(name, rule) for name, rule, _ in steps]
        # A rule is not even called on nodes of other classes (most nodes interest one
        # rule of the group at most).
        self._classes = [classes for _, _, classes in steps]
        self._fired = [False] * len(steps)
        self._done: dict[int, int] = {}  # new node uid -> the first rule it has been through all from
        changed = False
        for node in self.walk.nodes:
            rebuilt = self._rebuilt(node)
            out = self._apply(rebuilt, 0)
            changed = changed or out is not node
            self._record(node, rebuilt, out)
        if not changed:
            return self.program
        names = tuple(name for (name, _), f in zip(self._steps, self._fired, strict=True) if f)
        return finish(self.program, self.mapping, names, self.walk.live)

    def _apply(self, node: Node, start: int) -> Node:
        """Rules ``start..`` on ``node`` (whose children are done)."""
        steps, classes = self._steps, self._classes
        for i in range(start, len(steps)):
            if classes[i] is not None and type(node) not in classes[i]:
                continue
            new = steps[i][1](node, self)
            if new is node or new.type != node.type:  # a rule must never change a type
                continue
            self._fired[i] = True
            if self.is_final(new):
                # An existing node (x*1 -> x): already through every rule, and maybe
                # used elsewhere, so no rule may rewrite it as if it were this one.
                return new
            node = self._settle_children(new, i + 1)
        self._done[node.uid] = start
        return node

    def _settle_children(self, node: Node, start: int) -> Node:
        """Put the new inner nodes of a rule's result through rules ``start..``."""
        if start >= len(self._steps):
            return node
        children = node.children
        if not children:
            return node
        new_children = []
        for child in children:
            if self.is_final(child) or self._done.get(child.uid, len(self._steps)) <= start:
                new_children.append(child)
                continue
            settled = self._apply(self._settle_children(child, start), start)
            if settled is not child and self.is_final(settled):
                self.retain(settled)  # a new node became an existing one, which gains this user
            new_children.append(settled)
        new = tuple(new_children)
        return node if new == children else node.replacing_children(new)


LocalRule = Callable[[Node, Rebuilder], Node]


def local_pass(
    name: str, make_rule: Callable[[], LocalRule], rewrites: Iterable[type] | None = None
) -> Callable[[Program], Program]:
    """A pass made of one local rule; ``make_rule`` gives a fresh rule per run.
    :func:`run_local_passes` fuses consecutive such passes into one traversal.
    ``rewrites`` lists the node classes the rule can change, if not all: it
    returns any other node unchanged, so it is not called on them."""
    classes = None if rewrites is None else frozenset(rewrites)

    def run(program: Program) -> Program:
        return Rebuilder(program).run_local([(name, make_rule(), classes)])

    run.__name__ = run.__qualname__ = name
    run.local_rule = make_rule  # type: ignore[attr-defined]
    run.rewrites = classes  # type: ignore[attr-defined]
    return run


def run_local_passes(program: Program, passes: list[Callable[[Program], Program]]) -> Program:
    """Consecutive local passes in one bottom-up traversal. Each node sees its
    children after all of the passes, so the result is at least as simplified
    as running them one after another, and it costs one rebuild instead of one each."""
    steps = [(p.__name__, p.local_rule(), getattr(p, "rewrites", None)) for p in passes]  # type: ignore[attr-defined]
    return Rebuilder(program).run_local(steps)


def finish(program: Program, mapping: dict[int, Node], names: tuple[str, ...], live_before: set[int]) -> Program:
    """The rewritten program: outputs and bindings follow their nodes. A binding
    whose node was live before the rewrite and is not any more was absorbed
    (fused, reordered, folded away); it is dropped so it does not keep dead
    nodes in the DAG. Bindings that were already dead are left to ``dead_code``."""
    outputs = [mapping[o.uid] for o in program.outputs]
    seen: set[int] = set()
    uses: dict[int, int] = {}
    live_nodes = topological(outputs, seen, uses)
    live_after, live_uses = set(seen), dict(uses)
    bindings = []
    for binding_name, node in program.bindings:
        new = mapping.get(node.uid, node)
        if node.uid in live_before and new.uid not in live_after:
            continue
        bindings.append((binding_name, new))
    result = replace(program.with_outputs(outputs, bindings), applied=(*program.applied, *names))
    walk = Walk(live_nodes + topological((n for _, n in bindings), seen, uses), live_after, uses, live_uses)
    return remember(result, "walk", walk)
