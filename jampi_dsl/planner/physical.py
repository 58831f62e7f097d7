"""The physical plan: for every IR node, the method that runs it and why.

Lowering (``lower``) is the one place an algorithm is chosen. Each method is a
:class:`Method` with an ``applies`` test and a cost estimate; lowering asks
every registered method, keeps those that apply and fit in memory, and picks
the cheapest (or the forced one). Spark methods register here the same way the
local one does, so adding one touches nothing in the front half.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import PlanError
from . import ir
from .cost import Estimate, Resources
from .graph import Program
from .grid import cdiv
from .lifetimes import Lifetime, lifetimes
from .linalg import svd_is_randomized
from .methods import ALL as ALL_METHODS
from .methods import (
    DISTRIBUTED,
    LOCAL,
    PRODUCT_METHODS,
    SPARK,
    SPARSE_ON_DRIVER,
    Method,
    cannon_grid,
    shipped_side,
)

PRODUCT_METHOD_NAMES = tuple(m.name for m in PRODUCT_METHODS)
SMALL_RESULT_BYTES = 2**20  # a distributed product's result this small is collected (Step.collect)


@dataclass(frozen=True)
class Step:
    node: ir.Node
    method: str
    reason: str
    estimate: Estimate | None = None
    runner_up: tuple[str, Estimate | str] | None = None  # (method, its estimate or why it was rejected)
    forced: bool = False
    # A product whose tasks write its one consumer's .npy file (that Save step only commits it).
    writes: str | None = None
    lifetime: Lifetime | None = None  # set by lowering for every step of a plan
    grid: int | None = None  # a Cannon step's grid side q: q*q tasks, result blocks ceil(m/q) x ceil(n/q)
    ships: str | None = None  # a broadcast step's operand shipped to every task: "a" or "b"
    # A distributed product whose result is small: it comes to the driver at the end of its own
    # job, and what reads it runs there (a loop's vectors do not cost a Spark job per operation).
    collect: bool = False

    @property
    def block(self) -> tuple[int, int] | None:
        """A Cannon step's result block shape, from its grid."""
        if self.grid is None:
            return None
        m, n = self.node.type.shape
        return cdiv(m, self.grid), cdiv(n, self.grid)


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


def _choose_product(node: ir.Node, resources: Resources, forced: str, forced_by: str | None = None) -> Step:
    forced_by = forced_by or f"--executor {forced}"
    candidates: list[tuple[str, Estimate]] = []
    rejected: dict[str, str] = {}
    for name, method in _METHODS.items():
        if name not in PRODUCT_METHOD_NAMES:
            continue
        why_not = method.rejects(node, resources)
        if why_not is not None:
            rejected[name] = why_not
            continue
        candidates.append((name, method.estimate(node, resources)))
    if forced != "auto":
        if forced not in _METHODS:
            raise PlanError(f"{forced_by}: that method is not available in this build", node.span)
        if forced in rejected and rejected[forced] == SPARSE_ON_DRIVER and "local" in dict(candidates):
            return Step(node, "local", f"{forced_by} does not apply: {SPARSE_ON_DRIVER}", dict(candidates)["local"])
        if forced in rejected:
            raise PlanError(f"{forced_by} cannot run this product: {rejected[forced]}", node.span)
        chosen = dict(candidates)[forced]
        others = sorted((e.seconds, n, e) for n, e in candidates if n != forced)
        runner_up = (others[0][1], others[0][2]) if others else None
        return Step(node, forced, f"forced by {forced_by}", chosen, runner_up, forced=True)
    if not candidates:
        details = "; ".join(f"{n}: {why}" for n, why in rejected.items())
        raise PlanError(f"no method can run this {node.op} ({node.type}) in the memory available: {details}", node.span)
    candidates.sort(key=lambda c: c[1].seconds)
    name, estimate = candidates[0]
    if len(candidates) > 1:
        other, other_estimate = candidates[1]
        reason = f"cheapest: {_fmt(estimate)}; runner-up {other} {_fmt(other_estimate)}"
        runner_up: tuple[str, Any] | None = (other, other_estimate)
    elif rejected:
        other, why = next(iter(rejected.items()))
        if set(rejected.values()) == {SPARSE_ON_DRIVER}:
            reason = f"only method that applies ({SPARSE_ON_DRIVER})"
        else:
            reason = "only method that applies (" + "; ".join(f"{n}: {w}" for n, w in rejected.items()) + ")"
        runner_up = (other, why)
    else:
        reason = "only method available"
        runner_up = None
    return Step(node, name, reason, estimate, runner_up)


def _placements(nodes: list[ir.Node], products: dict[int, Step], resources: Resources,
                distributed_inputs: frozenset[str] = frozenset(),
                distributed_exports: frozenset[str] = frozenset()) -> dict[int, str]:
    """Which non-product nodes run distributed ("spark"): a node follows its inputs (forward),
    and a matrix used only by distributed consumers is made where they run (backward), so a
    generator or a file feeding a Spark product is produced by the tasks, never on the driver.
    An input an earlier segment left on the executors (``distributed_inputs``) stays there, and a
    value handed to later segments whose readers run there (``distributed_exports``) is made there."""
    distributed = {uid for uid, step in products.items() if step.method in DISTRIBUTED and not step.collect}
    why: dict[int, str] = {}
    for node in nodes:
        if isinstance(node, ir.Input) and node.slot in distributed_inputs and resources.spark:
            distributed.add(node.uid)
            why[node.uid] = "kept on the executors by an earlier part of the program"
        elif isinstance(node, ir.Export) and node.slot in distributed_exports and resources.spark \
                and node.x.type.is_matrix:
            distributed.add(node.uid)
            why[node.uid] = "read on the executors by a later part of the program"
    users: dict[int, list[ir.Node]] = {}
    for node in nodes:
        for child in node.children:
            users.setdefault(child.uid, []).append(node)

    def can_distribute(node: ir.Node) -> bool:
        if node.uid in products or SPARK.rejects(node, resources) is not None:
            return False
        return node.type.kind in ("matrix", "output") or isinstance(node, ir.Reduce)

    def forward() -> None:
        for node in nodes:
            if node.uid in products or node.uid in distributed or not can_distribute(node):
                continue
            if any(c.uid in distributed and c.type.is_matrix for c in node.children):
                distributed.add(node.uid)
                why[node.uid] = "follows its distributed input"
            elif LOCAL.rejects(node, resources) is not None:
                distributed.add(node.uid)
                why[node.uid] = f"too big for the driver ({LOCAL.rejects(node, resources)})"

    forward()
    for node in reversed(nodes):
        if node.uid in products or node.uid in distributed or not node.type.is_matrix:
            continue
        consumers = users.get(node.uid, [])
        if consumers and can_distribute(node) and all(c.uid in distributed for c in consumers):
            distributed.add(node.uid)
            why[node.uid] = "made by the tasks of its distributed consumers"
    forward()
    return {uid: why[uid] for uid in distributed if uid not in products}


def _non_product_step(node: ir.Node, resources: Resources, placed: dict[int, str]) -> Step:
    if node.uid in placed:
        reason = placed[node.uid] + _algorithm(node)
        return Step(node, "spark", reason, SPARK.estimate(node, resources))
    why_not = LOCAL.rejects(node, resources)
    if why_not is not None:
        raise PlanError(f"no method can run this {node.op} ({node.type}): local: {why_not}; "
                        f"spark: {SPARK.rejects(node, resources) or 'not placed'}", node.span)
    reason = "on the driver: its inputs are local" if node.children else "on the driver"
    if isinstance(node, ir.Factor) and node.operator == "svd" and svd_is_randomized(node.x.type.shape, node.k):
        s = node.sketching
        reason += (f"; randomized SVD: an n x (k+{s.oversample}) sketch (seed {s.seed}), {s.iters} power "
                   "iterations re-orthonormalised by QR")
    elif isinstance(node, ir.LINALG_NODES) and node.operator != "diag":
        reason += "; LAPACK on the driver"
    return Step(node, "local", reason, LOCAL.estimate(node, resources))


_ALGORITHMS = {  # what a distributed linear-algebra step does, for explain
    "solve": "; A's LU factors broadcast, B's columns solved blockwise",
    "lstsq": "; TSQR: each row block's R and Q.T @ B, the small problem solved on the driver",
    "qr": "; CholeskyQR2 if A is well conditioned (Gram matrices of the panels), else TSQR: each row "
          "panel factored by its task, the stacked R factors on the driver",
    "svd": "; CholeskyQR2 or TSQR, then the SVD of R on the driver and U = Q @ U_R by the tasks",
}


def _algorithm(node: ir.Node) -> str:
    if isinstance(node, ir.Factor) and node.operator == "svd" and \
            svd_is_randomized(node.x.type.shape, node.k):
        s = node.sketching
        return (f"; randomized SVD: an n x (k+{s.oversample}) sketch (seed {s.seed}), {s.iters} power "
                "iterations re-orthonormalised by TSQR")
    if isinstance(node, ir.LINALG_NODES):
        return _ALGORITHMS.get(node.operator, "")
    return ""


def executors_share_files(master: str) -> bool:
    """Executors see the driver's files: local mode, or a cluster whose master is on this machine."""
    return master == "embedded" or master.startswith("local") or bool(re.match(r"spark://(127\.|localhost[:/])", master))


def _write_through(steps: tuple[Step, ...], resources: Resources) -> tuple[Step, ...]:
    """A Cannon product saved to ``.npy`` and used by nothing else writes the file from its tasks.

    Decided here, not by the executor looking ahead, because it changes how two
    steps run (the product writes, the save only commits) and so belongs in the
    plan, where ``explain`` shows it. A Gemm qualifies when its tasks can make
    the addend themselves (a generator or an ``.npy`` file) or do not need it.
    The executor still falls back to the ordinary save if the run's Spark turns
    out not to share files with the driver.
    """
    if not executors_share_files(resources.master):
        return steps
    users: dict[int, list[Step]] = {}
    for step in steps:
        for uid in {c.uid for c in step.node.children}:
            users.setdefault(uid, []).append(step)
    changed: dict[int, Step] = {}
    for step in steps:
        consumers = users.get(step.node.uid, [])
        if step.method != "cannon" or len(consumers) != 1 or not _addend_made_by_tasks(step.node):
            continue
        save = consumers[0]
        if not (isinstance(save.node, ir.Save) and save.node.format == "npy" and save.method == "spark"):
            continue
        name = os.path.basename(save.node.path)
        changed[step.node.uid] = replace(step, reason=f"{step.reason}; writes {name} from its tasks",
                                         writes=save.node.path)
        changed[save.node.uid] = replace(save, reason=f"commits {name}, written by the tasks of its input")
    return tuple(changed.get(s.node.uid, s) for s in steps)


def _addend_made_by_tasks(node: ir.Node) -> bool:
    if not isinstance(node, ir.Gemm) or node.beta == 0.0:
        return True
    c = node.c.x if isinstance(node.c, ir.Transpose) else node.c
    return isinstance(c, ir.Generate) or (isinstance(c, ir.Load) and c.format == "npy")


def lower(program: Program, resources: Resources | None = None, executor: str = "auto",
          forced_by: str | None = None, distributed_inputs: frozenset[str] = frozenset(),
          distributed_exports: frozenset[str] = frozenset(), collect_vectors: bool = False) -> PhysicalPlan:
    """Choose a method for every live node (after the rewrite passes). ``forced_by`` names where
    a forced ``executor`` came from, for explain and errors (the CLI flag, or the API's session).
    ``distributed_inputs``: the slots of :class:`~.ir.Input` values held on the executors;
    ``distributed_exports``: the slots whose later readers run there. ``collect_vectors``: a
    distributed product giving a small vector brings it to the driver (a loop body's vectors)."""
    if executor not in FORCEABLE:
        raise PlanError(f"--executor must be one of {', '.join(FORCEABLE)}, got {executor!r}")
    resources = resources or Resources.local_only()
    nodes = program.live_nodes()
    chosen: dict[tuple, Step] = {}
    products: dict[int, Step] = {}
    for node in nodes:
        if isinstance(node, ir.PRODUCT_NODES):
            key = _cost_key(node)
            done = chosen.get(key)
            if done is None:
                done = chosen[key] = _choose_product(node, resources, executor, forced_by)
            products[node.uid] = done if done.node is node else _for_node(done, node)
    for uid, step in products.items():
        if collect_vectors and step.method in ("broadcast", "cannon") and min(step.node.type.shape) == 1 \
                and step.node.type.nbytes <= SMALL_RESULT_BYTES:
            products[uid] = _copy(step, collect=True, reason=f"{step.reason}; its small result comes to the driver")
    placed = _placements(nodes, products, resources, distributed_inputs, distributed_exports)
    local_steps: dict[tuple, Step] = {}
    steps = []
    for node in nodes:
        step = products.get(node.uid)
        if step is None:
            key = (_cost_key(node), placed.get(node.uid), bool(node.children))
            step = local_steps.get(key)
            if step is None:
                step = local_steps[key] = _non_product_step(node, resources, placed)
            elif step.node is not node:
                step = _for_node(step, node)
        steps.append(step)
    steps = _write_through(tuple(steps), resources)
    steps = tuple(_copy(step, lifetime=life, **_physical_fields(step, resources))
                  for step, life in zip(steps, lifetimes(steps), strict=True))
    return PhysicalPlan(program, steps, resources)


def _physical_fields(step: Step, resources: Resources) -> dict:
    """What a product's executor needs that the method alone does not say."""
    if step.method == "cannon":
        return {"grid": cannon_grid(step.node, resources)}
    if step.method == "broadcast":  # the smaller operand travels; the big one never moves
        node = step.node
        return {"ships": shipped_side(node)}
    return {}


def _copy(step: Step, **fields) -> Step:
    """``step`` with ``fields`` changed (a field copy: ``dataclasses.replace`` re-runs the
    constructor, which showed on a 10,000-statement plan)."""
    copy = object.__new__(Step)
    copy.__dict__.update(step.__dict__)
    copy.__dict__.update(fields)
    return copy


def _for_node(step: Step, node: ir.Node) -> Step:
    """``step``'s choice for another node alike in cost."""
    return _copy(step, node=node)


def _cost_key(node: ir.Node) -> tuple:
    """What the methods' tests and estimates read of a node: its class, its type, its
    children's types (non-zero counts included: types compare without them), its transpose
    flags and a save's format. Nodes alike in these get the same choice, so a program that
    repeats one product ten thousand times is costed once."""
    return (type(node), node.type, node.type.nnz, tuple((c.type, c.type.nnz) for c in node.children),
            getattr(node, "trans_a", None), getattr(node, "trans_b", None),
            getattr(node, "operator", None), getattr(node, "k", None),
            getattr(node, "format", None), getattr(node, "options", None))


# The planner owns every method's cost model; whether one applies depends on the Resources.
for _method in ALL_METHODS:
    register_method(_method)
