"""Every elementwise operation, declared once.

An entry names the operation as the IR and ``.lin`` spell it, gives its NumPy
kernel (the one the driver, the Spark tasks and constant folding all run) and
its cost per entry, and says whether it is a function users call by name, an
operator, and a Python API method. The parser, the shape checker, the
executors and the API read this table, so a new elementwise function is one
entry here. NumPy only: Spark tasks import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Elementwise:
    name: str  # the IR operator: the symbol of an operator ("+", "**", "<"), else the function name
    arity: int
    kernel: Callable[..., Any]
    flops: float = 1.0  # per result entry, for the cost model
    predicate: bool = False  # gives 1.0 / 0.0 in the operands' dtype (comparisons, logic)
    function: bool = False  # callable by name in .lin: tanh(x), maximum(a, b)
    scalar_only: bool = False  # `and`, `or`, `not`: they combine conditions, not matrices
    api: str | None = None  # the name of the Python API method or function, if any

    def apply(self, *args: Any) -> Any:
        """The kernel over NumPy arrays and Python floats; IEEE results (inf, nan) never raise.
        All-scalar arguments give a Python float (a NumPy scalar would widen float32)."""
        arrays = [a for a in args if isinstance(a, np.ndarray)]
        if not arrays:
            with np.errstate(all="ignore"):
                return float(self.kernel(*(np.float64(a) for a in args)))
        with np.errstate(all="ignore"):  # Python floats stay weak: float32 stays float32
            out = self.kernel(*args)
        # The IR's dtype: float32 only when every matrix operand is (where(c, 1, 2) would be int).
        return out.astype(np.result_type(*arrays), copy=False)


def _where(c, a, b):
    return np.where(c != 0, a, b)


def _and(a, b):
    return np.logical_and(a != 0, b != 0)


def _or(a, b):
    return np.logical_or(a != 0, b != 0)


def _not(a):
    return a == 0


_ALL = (
    # unary: functions (neg is the prefix minus)
    Elementwise("neg", 1, np.negative),
    Elementwise("abs", 1, np.abs, function=True, api="abs"),
    Elementwise("sqrt", 1, np.sqrt, flops=4, function=True, api="sqrt"),
    Elementwise("exp", 1, np.exp, flops=10, function=True, api="exp"),
    Elementwise("log", 1, np.log, flops=10, function=True, api="log"),
    Elementwise("tanh", 1, np.tanh, flops=10, function=True, api="tanh"),
    Elementwise("sign", 1, np.sign, function=True, api="sign"),
    Elementwise("not", 1, _not, predicate=True, scalar_only=True),
    # binary operators
    Elementwise("+", 2, np.add),
    Elementwise("-", 2, np.subtract),
    Elementwise("*", 2, np.multiply),
    Elementwise("/", 2, np.true_divide),
    Elementwise("**", 2, np.power, flops=10),
    Elementwise("<", 2, np.less, predicate=True),
    Elementwise("<=", 2, np.less_equal, predicate=True),
    Elementwise(">", 2, np.greater, predicate=True),
    Elementwise(">=", 2, np.greater_equal, predicate=True),
    Elementwise("==", 2, np.equal, predicate=True),
    Elementwise("!=", 2, np.not_equal, predicate=True),
    Elementwise("and", 2, _and, predicate=True, scalar_only=True),
    Elementwise("or", 2, _or, predicate=True, scalar_only=True),
    # binary functions
    Elementwise("maximum", 2, np.maximum, function=True, api="maximum"),
    Elementwise("minimum", 2, np.minimum, function=True, api="minimum"),
    # ternary
    Elementwise("where", 3, _where, function=True, api="where"),
)

ELEMENTWISE: dict[str, Elementwise] = {op.name: op for op in _ALL}
FUNCTIONS: dict[str, Elementwise] = {op.name: op for op in _ALL if op.function}
UNARY = tuple(op.name for op in _ALL if op.arity == 1)
BINARY = tuple(op.name for op in _ALL if op.arity == 2)


def apply(name: str, *args: Any) -> Any:
    return ELEMENTWISE[name].apply(*args)


def broadcast_shape(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    """NumPy's two-dimensional broadcasting: each dimension equal, or 1 on one side."""
    out = []
    for x, y in zip(a, b, strict=True):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return out[0], out[1]
