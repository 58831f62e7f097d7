"""Runs a plan: :func:`execute` takes a straight-line plan to the runner, and
interprets a program with blocks (a :class:`~jampi_dsl.planner.flow.FlowPlan`): its
segments in the order its loops and branches say, values passed between them
by slot.

The slots own what their values keep on Spark. A value leaves a segment with
its holdings (its cached blocks), and they are released when no slot holds the
value any more: the previous iteration's copy of a carried matrix is freed as
soon as the new one is exported. Only the scalars that decide a loop or a
branch come to the driver for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from threadpoolctl import threadpool_limits

from ..errors import ExecutionError
from ..planner.flow import Branch, BreakItem, FlowPlan, Loop, Segment
from ..planner.physical import PhysicalPlan, Step
from .base import RunContext
from .runner import RunResult, _release, run_steps


def execute(
    plan: PhysicalPlan | FlowPlan,
    ctx: RunContext | None = None,
    *,
    on_start: Callable[[Step], None] | None = None,
    on_done: Callable[[Step, float], None] | None = None,
    on_loop: Callable[[Any, int, dict], None] | None = None,
) -> RunResult:
    """Run ``plan``. Every value is dropped, and what its step keeps on Spark released, right
    after the step the plan names (``Step.lifetime``); whatever is left is released at the end,
    whether the run succeeded or not."""
    ctx = ctx or RunContext()
    if not isinstance(plan, PhysicalPlan):  # a program with loops or branches (planner.flow.FlowPlan)
        return execute_flow(plan, ctx, on_start=on_start, on_done=on_done, on_loop=on_loop)
    result = RunResult(outputs=ctx.outputs)
    try:
        with threadpool_limits(limits=ctx.blas_threads):
            run_steps(plan, ctx, result, on_start, on_done)
    except BaseException:
        ctx.staged.discard()
        raise
    ctx.staged.commit()
    return result



class _Break(Exception):
    pass


class Slots:
    """slot -> value, and the holdings each distinct value keeps on Spark (shared by the slots
    that hold the same value)."""

    def __init__(self, values: dict[str, Any]):
        self.values = values
        self._holding: dict[int, tuple[Any, list, int]] = {}  # id(value) -> (value, holdings, slots)

    def set(self, slot: str, value: Any, held: list | None = None) -> None:
        old = self.values.get(slot)
        if old is value:
            if held:
                _release(held)  # (cannot happen: a value is exported once by the step that made it)
            return
        key = id(value)
        entry = self._holding.get(key)
        if entry is not None:
            self._holding[key] = (value, entry[1] + list(held or []), entry[2] + 1)
        elif held:
            self._holding[key] = (value, list(held), 1)
        self.values[slot] = value
        if old is not None:
            self._drop(old)

    def _drop(self, value: Any) -> None:
        key = id(value)
        entry = self._holding.get(key)
        if entry is None:
            return
        kept, held, count = entry
        if count > 1:
            self._holding[key] = (kept, held, count - 1)
        else:
            del self._holding[key]
            _release(held)

    def release_all(self) -> None:
        for _, held, _ in self._holding.values():
            _release(held)
        self._holding.clear()
        self.values.clear()


def execute_flow(plan: FlowPlan, ctx: RunContext, *, on_start=None, on_done=None, on_loop=None) -> RunResult:
    result = RunResult(outputs=ctx.outputs)
    slots = Slots(ctx.env)
    run = _Interpreter(ctx, slots, result, on_start, on_done, on_loop)
    try:
        with threadpool_limits(limits=ctx.blas_threads):
            run.items(plan.flow.body)
    except BaseException:
        ctx.staged.discard()
        raise
    finally:
        slots.release_all()
    ctx.staged.commit()
    return result


class _Interpreter:
    def __init__(self, ctx: RunContext, slots: Slots, result: RunResult, on_start, on_done, on_loop):
        self.ctx, self.slots, self.result = ctx, slots, result
        self.on_start, self.on_done, self.on_loop = on_start, on_done, on_loop

    def items(self, items: list) -> None:
        for item in items:
            if isinstance(item, Segment):
                self.segment(item)
            elif isinstance(item, Loop):
                self.loop(item)
            elif isinstance(item, Branch):
                self.branch(item)
            elif isinstance(item, BreakItem):
                raise _Break()

    def segment(self, segment: Segment) -> None:
        exports = run_steps(segment.plan, self.ctx, self.result, self.on_start, self.on_done)
        for slot, (value, held) in exports.items():
            self.slots.set(slot, value, held)

    def scalar(self, slot: str, item, what: str) -> float:
        value = self.slots.values[slot]
        if not isinstance(value, float):
            raise ExecutionError(f"{what} is not a scalar", item.span)  # pragma: no cover - checked
        return value

    def loop(self, loop: Loop) -> None:
        if loop.kind == "for":
            self.for_loop(loop)
            return
        iteration = 0
        while True:
            if loop.cond is not None:
                self.segment(loop.cond)
                if not self.scalar(loop.cond_slot, loop, "the while condition"):
                    return
            elif not loop.always:
                return
            self.report(loop, iteration)
            try:
                self.items(loop.body)
            except _Break:
                return
            iteration += 1

    def for_loop(self, loop: Loop) -> None:
        if loop.header is not None:
            self.segment(loop.header)
        bounds = []
        for bound in loop.bounds:
            value = self.scalar(bound, loop, "a range() bound") if isinstance(bound, str) else bound
            if value != int(value):
                raise ExecutionError(f"range() needs whole numbers, got {value:g}", loop.span)
            bounds.append(int(value))
        if bounds[2] == 0:
            raise ExecutionError("range() step must not be zero", loop.span)
        for iteration, i in enumerate(range(*bounds)):
            self.slots.set(loop.var_slot, float(i))
            self.report(loop, iteration)
            try:
                self.items(loop.body)
            except _Break:
                return

    def report(self, loop: Loop, iteration: int) -> None:
        if self.on_loop is not None:
            values = {name: self.slots.values.get(slot) for name, slot in loop.watch}
            self.on_loop(loop, iteration, values)

    def branch(self, branch: Branch) -> None:
        for cond, slot, body in branch.cases:
            self.segment(cond)
            if self.scalar(slot, branch, "the if condition"):
                self.items(body)
                return
        if branch.orelse is not None:
            self.items(branch.orelse)
