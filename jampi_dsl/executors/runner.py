"""Runs a physical plan: nodes in topological order, each on its method's
executor, inputs moved to the placement that executor wants, values
materialised and released where the plan's lifetimes say."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExecutionError, JampiError
from ..planner import ir
from ..planner.graph import describe
from ..planner.physical import PhysicalPlan, Step
from .base import Executor, OutputValue, RunContext
from .local import LocalExecutor


def _spark_executor(name: str) -> Callable[[], Executor]:
    def make() -> Executor:
        # Importing these imports pyspark: only done when a plan has distributed steps.
        from . import broadcast, mllib, spark

        return {"spark": spark.SparkExecutor, "cannon": spark.CannonExecutor,
                "broadcast": broadcast.BroadcastExecutor, "mllib": mllib.MllibExecutor}[name]()

    return make


_EXECUTORS: dict[str, Callable[[], Executor]] = {
    "local": LocalExecutor,
    "spark": _spark_executor("spark"),
    "cannon": _spark_executor("cannon"),
    "broadcast": _spark_executor("broadcast"),
    "mllib": _spark_executor("mllib"),
}


def register_executor(method: str, factory: Callable[[], Executor]) -> None:
    _EXECUTORS[method] = factory


@dataclass
class StepTiming:
    step: Step
    seconds: float


@dataclass
class RunResult:
    outputs: list[OutputValue] = field(default_factory=list)
    timings: list[StepTiming] = field(default_factory=list)

    @property
    def values(self) -> dict[str, Any]:
        """Printed values by their label, saved matrices by their path."""
        return {o.label: o.value for o in self.outputs}


def _to_local(value: Any) -> Any:
    if hasattr(value, "rdd"):  # a DistMatrix; duck-typed so local-only plans never import pyspark
        from .spark import to_local

        return to_local(value)
    return value


def node_name(plan: PhysicalPlan, step: Step) -> str:
    names = plan.program.names()
    label = names.get(step.node.uid)
    text = describe(step.node, lambda n: names.get(n.uid, f"%{n.uid}"))
    return f"{label} = {text}" if label else text


def short_name(plan: PhysicalPlan, step: Step) -> str:
    """A compact label for tables: ``G = matmul`` or ``save(G)``."""
    names = plan.program.names()
    node = step.node
    attrs = node.attrs()
    op = attrs.get("operator", node.op)
    if "value" in attrs:
        return f"{attrs['value']:g}"
    if node.uid in names:
        return f"{names[node.uid]} = {op}"
    args = ", ".join(names.get(c.uid) or getattr(c, "name", "") or c.op for c in node.children)
    return f"{op}({args})"


def run_steps(plan: PhysicalPlan, ctx: RunContext, result: RunResult, on_start=None, on_done=None) -> dict:
    """Run one plan's steps. Returns what its Export steps hand on: slot -> (value, what that value
    keeps on Spark, now the caller's to release). Everything else is released here, also on failure."""
    run = _Run(plan, ctx, result)
    try:
        for index, step in enumerate(plan.steps):
            run.step(index, step, on_start, on_done)
    except BaseException:
        run.release_all(keep_exports=False)
        raise
    run.release_all(keep_exports=True)
    return {slot: (value, run.kept.get(uid, [])) for slot, (value, uid) in run.exports.items()}


class _Run:
    def __init__(self, plan: PhysicalPlan, ctx: RunContext, result: RunResult):
        self.plan, self.ctx, self.result = plan, ctx, result
        self.executors: dict[str, Executor] = {}
        self.values: dict[int, Any] = {}
        self.held: dict[int, list] = {}  # node uid -> what its step keeps on Spark
        self.release_at: dict[int, list[int]] = {}
        for step in plan.steps:
            self.release_at.setdefault(step.lifetime.release_after, []).append(step.node.uid)
        self.exports: dict[str, tuple[Any, int]] = {}  # slot -> (value, uid of the node that made it)
        self.exported: set[int] = set()  # the uids in ``exports``
        self.kept: dict[int, list] = {}  # what exported values keep on Spark, handed to the caller

    def step(self, index: int, step: Step, on_start, on_done) -> None:
        plan, ctx, node = self.plan, self.ctx, step.node
        if type(node) is ir.Export:  # hands a value on: no work, nothing to time
            self.exports[node.slot] = (self.values[node.x.uid], node.x.uid)
            self.exported.add(node.x.uid)
            self._release_after(index)
            return
        if step.method not in _EXECUTORS:
            raise ExecutionError(f"no executor for method {step.method!r}", node.span, node=node_name(plan, step))
        executor = self.executors.get(step.method) or self.executors.setdefault(step.method, _EXECUTORS[step.method]())
        if on_start:
            on_start(step)
        started = time.perf_counter()
        ctx.step = step
        held: list = []
        try:
            inputs = [self.values[c.uid] for c in node.children]
            if executor.placement == "local":
                inputs = [_to_local(v) for v in inputs]
            with _holding(executor) as held:
                value = executor.run(node, inputs, ctx)
                if step.collect:  # the plan brings this small result to the driver
                    value = _to_local(value)
                if step.lifetime.materialize:
                    value = _materialize(value, ctx)
        except JampiError as err:
            _release(held)
            if err.node is None and isinstance(err, ExecutionError):
                err.node = node_name(plan, step)
                err.span = err.span or node.span  # (a kernel's own error knows no line)
            raise
        except MemoryError:
            _release(held)
            raise ExecutionError("out of memory", node.span, node=node_name(plan, step)) from None
        except Exception as err:  # a runtime failure or an executor bug: name the node, keep the cause
            _release(held)
            raise ExecutionError(failure_reason(err), node.span, node=node_name(plan, step)) from err
        seconds = time.perf_counter() - started
        self.values[node.uid] = value
        if held:
            self.held[node.uid] = held
        self.result.timings.append(StepTiming(step, seconds))
        if on_done:
            on_done(step, seconds)
        self._release_after(index)

    def _release_after(self, index: int) -> None:
        for uid in self.release_at.pop(index, ()):
            self.values.pop(uid, None)
            held = self.held.pop(uid, [])
            if uid in self.exported:
                self.kept[uid] = held
            else:
                _release(held)

    def release_all(self, keep_exports: bool) -> None:
        exported = self.exported if keep_exports else set()
        self.values.clear()
        for uid, held in self.held.items():
            if uid in exported:
                self.kept[uid] = held
            else:
                _release(held)
        self.held.clear()
        if not keep_exports:
            for held in self.kept.values():
                _release(held)
            self.kept.clear()


def _holding(executor: Executor):
    if executor.placement == "local":
        return nullcontext([])
    from .holdings import holding

    return holding()


def _release(held: list) -> None:
    if held:
        from .holdings import release

        release(held)


def _materialize(value: Any, ctx: RunContext) -> Any:
    from .spark import keep

    return keep(value, ctx)


def failure_reason(err: BaseException) -> str:
    """One line for a failed step: what Spark lost or what broke, not a page of JVM frames
    (``JAMPI_VERBOSE=1`` or ``--verbose`` prints the whole chain)."""
    text = str(err)
    patterns = (
        (r"block (rdd_\d+_\d+) of RDD \d+ not found|Checkpoint block (rdd_\d+_\d+) not found",
         "a cached block ({}) is gone: the executor that held it was lost"),
        (r"Python worker exited unexpectedly|crashed", "a Python worker exited unexpectedly"),
        (r"java\.lang\.OutOfMemoryError[^\n]*", "the JVM ran out of memory ({})"),
        (r"No space left on device", "disk full (No space left on device)"),
        (r"ExecutorLostFailure[^\n]*", "an executor was lost ({})"),
    )
    for pattern, message in patterns:
        match = re.search(pattern, text)
        if match:
            detail = next((g for g in match.groups() if g), match.group(0)) if match.groups() else match.group(0)
            return message.format(detail.strip()[:200])
    first = next((line.strip() for line in text.splitlines()
                  if line.strip() and not line.strip().startswith(("An error occurred", "at "))), "")
    return f"{type(err).__name__}: {first[:500]}" if first else type(err).__name__
