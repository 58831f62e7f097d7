"""What every executor shares: dispatch on IR node type, and the run context.

An executor is a class whose methods are registered per node type with
``@handles(NodeType)``; ``run`` finds the handler through the node's class.
Values are NumPy arrays / Python floats for local executors, and distributed
matrices for the Spark ones; the runner moves values between the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExecutionError
from ..planner import ir
from .io import StagedOutputs


def handles(*node_types: type[ir.Node]):
    def mark(fn):
        fn._handles = node_types
        return fn

    return mark


class Executor:
    """Subclasses set ``name`` and ``placement`` and decorate handlers with ``@handles``."""

    name = "?"
    placement = "local"  # where this executor wants its matrix inputs: "local" or "distributed"
    _handlers: dict[type, Callable]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._handlers = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for node_type in getattr(attr, "_handles", ()):
                    cls._handlers[node_type] = attr

    def supports(self, node: ir.Node) -> bool:
        return type(node) in self._handlers

    def run(self, node: ir.Node, inputs: list[Any], ctx: RunContext) -> Any:
        handler = self._handlers.get(type(node))
        if handler is None:
            raise ExecutionError(f"the {self.name} executor cannot run {node.op} nodes")
        return handler(self, node, inputs, ctx)


@dataclass
class OutputValue:
    kind: str  # "print" | "save" | "result"
    label: str  # print label, saved path, or result label
    value: Any  # float, ndarray, or (for distributed saves) None
    text: str = ""  # what print showed


@dataclass
class RunContext:
    """State one run shares across executors."""

    params: dict[str, Any] = field(default_factory=dict)
    outputs: list[OutputValue] = field(default_factory=list)
    on_print: Callable[[str], None] | None = None
    spark: Any = None  # a SparkSession (or jampi's OwnSession) once some node needs one
    spark_factory: Callable[[], Any] | None = None  # starts (or finds) the session on first use
    blas_threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    staged: StagedOutputs = field(default_factory=StagedOutputs)  # saves, renamed into place at the end
    step: Any = None  # the plan step being run: its physical decisions (e.g. ``writes``) beyond the method
    env: dict[str, Any] = field(default_factory=dict)  # slot -> value, between a program's segments

    def get_spark(self) -> Any:
        if self.spark is None:
            if self.spark_factory is None:
                # For callers that pass no factory (``execute(plan)`` alone); the API and the CLI
                # pass theirs. No cycle: session imports neither the executors nor the API.
                from ..session import spark_for_plans

                self.spark_factory = spark_for_plans
            self.spark = self.spark_factory()
        return self.spark

    def emit(self, output: OutputValue) -> None:
        self.outputs.append(output)
        if output.kind == "print" and self.on_print is not None:
            self.on_print(output.text)
