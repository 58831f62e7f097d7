"""Runs a physical plan: nodes in topological order, each on its method's
executor, inputs moved to the placement that executor wants, and every
intermediate freed as soon as its last consumer has run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from threadpoolctl import threadpool_limits

from ..errors import ExecutionError, JampiError
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
    args = ", ".join(names.get(c.uid, c.op) for c in node.children)
    return f"{op}({args})"


def execute(
    plan: PhysicalPlan,
    ctx: RunContext | None = None,
    *,
    on_start: Callable[[Step], None] | None = None,
    on_done: Callable[[Step, float], None] | None = None,
) -> RunResult:
    ctx = ctx or RunContext()
    executors: dict[str, Executor] = {}
    remaining: dict[int, int] = {}
    for step in plan.steps:
        for child in {c.uid for c in step.node.children}:
            remaining[child] = remaining.get(child, 0) + 1
    values: dict[int, Any] = {}
    result = RunResult(outputs=ctx.outputs)
    try:
        with threadpool_limits(limits=ctx.blas_threads):
            _run_steps(plan, ctx, executors, remaining, values, result, on_start, on_done)
    except BaseException:
        ctx.staged.discard()
        raise
    ctx.staged.commit()
    return result


def _run_steps(plan, ctx, executors, remaining, values, result, on_start, on_done) -> None:
    for step in plan.steps:
        node = step.node
        if step.method not in _EXECUTORS:
            raise ExecutionError(f"no executor for method {step.method!r}", node.span, node=node_name(plan, step))
        executor = executors.get(step.method) or executors.setdefault(step.method, _EXECUTORS[step.method]())
        if on_start:
            on_start(step)
        started = time.perf_counter()
        ctx.step = step
        try:
            inputs = [values[c.uid] for c in node.children]
            if executor.placement == "local":
                inputs = [_to_local(v) for v in inputs]
            value = executor.run(node, inputs, ctx)
        except JampiError as err:
            if err.node is None and isinstance(err, ExecutionError):
                err.node = node_name(plan, step)
            raise
        except MemoryError:
            raise ExecutionError("out of memory", node.span, node=node_name(plan, step)) from None
        except Exception as err:  # an executor bug or a runtime failure: name the node, keep the cause
            raise ExecutionError(f"{type(err).__name__}: {err}", node.span, node=node_name(plan, step)) from err
        seconds = time.perf_counter() - started
        values[node.uid] = value
        result.timings.append(StepTiming(step, seconds))
        if on_done:
            on_done(step, seconds)
        for child in {c.uid for c in node.children}:
            remaining[child] -= 1
            if remaining[child] == 0:
                del values[child]
        if remaining.get(node.uid, 0) == 0:
            values.pop(node.uid, None)
