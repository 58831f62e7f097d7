"""The physical plan: for every IR node, the method that runs it and why.

Lowering (``lower``) is the one place an algorithm is chosen. Each method is a
:class:`Method` with an ``applies`` test and a cost estimate; lowering asks
every registered method, keeps those that apply and fit in memory, and picks
the cheapest (or the forced one). Spark methods register here the same way the
local one does, so adding one touches nothing in the front half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import PlanError
from . import ir
from .cost import Estimate, Resources
from .graph import Program
from .methods import ALL as ALL_METHODS
from .methods import Method


@dataclass(frozen=True)
class Step:
    node: ir.Node
    method: str
    reason: str
    estimate: Estimate | None = None
    runner_up: tuple[str, Estimate | str] | None = None  # (method, its estimate or why it was rejected)
    forced: bool = False


@dataclass(frozen=True)
class PhysicalPlan:
    program: Program
    steps: tuple[Step, ...]
    resources: Resources
    _index: dict[int, Step] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({step.node.uid: step for step in self.steps})

    def step(self, node: ir.Node) -> Step:
        return self._index[node.uid]

    @property
    def methods_used(self) -> set[str]:
        return {s.method for s in self.steps}


_METHODS: dict[str, Method] = {}
FORCEABLE = ("auto", "local", "cannon", "mllib", "broadcast")


def register_method(method: Method) -> None:
    _METHODS[method.name] = method


def methods() -> dict[str, Method]:
    return dict(_METHODS)


def _fmt(estimate: Estimate) -> str:
    return estimate.short()


def _choose(node: ir.Node, resources: Resources, forced: str) -> Step:
    is_product = isinstance(node, ir.PRODUCT_NODES)
    candidates: list[tuple[str, Estimate]] = []
    rejected: dict[str, str] = {}
    for name, method in _METHODS.items():
        if method.products_only and not is_product:
            continue
        why_not = method.rejects(node, resources)
        if why_not is not None:
            rejected[name] = why_not
            continue
        candidates.append((name, method.estimate(node, resources)))
    if is_product and forced != "auto":
        if forced not in _METHODS:
            raise PlanError(f"--executor {forced}: that method is not available in this build", node.span)
        if forced in rejected:
            raise PlanError(f"--executor {forced} cannot run this product: {rejected[forced]}", node.span)
        chosen = dict(candidates)[forced]
        others = sorted((e.seconds, n, e) for n, e in candidates if n != forced)
        runner_up = (others[0][1], others[0][2]) if others else None
        return Step(node, forced, f"forced by --executor {forced}", chosen, runner_up, forced=True)
    if not candidates:
        details = "; ".join(f"{n}: {why}" for n, why in rejected.items())
        raise PlanError(f"no method can run this {node.op} ({node.type}): {details}", node.span)
    candidates.sort(key=lambda c: c[1].seconds)
    name, estimate = candidates[0]
    if len(candidates) > 1:
        other, other_estimate = candidates[1]
        reason = f"cheapest: {_fmt(estimate)} vs {other} {_fmt(other_estimate)}"
        runner_up: tuple[str, Any] | None = (other, other_estimate)
    elif rejected:
        other, why = next(iter(rejected.items()))
        reason = f"only method that applies ({other}: {why})"
        runner_up = (other, why)
    else:
        reason = "only method available"
        runner_up = None
    return Step(node, name, reason, estimate, runner_up)


def lower(program: Program, resources: Resources | None = None, executor: str = "auto") -> PhysicalPlan:
    """Choose a method for every live node (after the rewrite passes)."""
    if executor not in FORCEABLE:
        raise PlanError(f"--executor must be one of {', '.join(FORCEABLE)}, got {executor!r}")
    resources = resources or Resources.local_only()
    steps = tuple(_choose(node, resources, executor) for node in program.live_nodes())
    return PhysicalPlan(program, steps, resources)


# The planner owns every method's cost model; whether one applies depends on the Resources.
for _method in ALL_METHODS:
    register_method(_method)
