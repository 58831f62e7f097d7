"""Which results are sparse, and how many non-zeros they hold.

The contract's storage rules, decided from the operands' types before the run (a
value's storage never depends on its numbers), and non-zero estimates in the
spirit of SystemDS's metadata estimators: exact for inputs, independence of the
non-zero positions for products and elementwise results. The estimates feed the
cost model, the memory verdicts and explain; they are upper bounds where a
bound is cheap (an elementwise function of one sparse operand never adds
non-zeros).

An elementwise operation keeps a sparse operand sparse when it maps 0 to 0:
``*`` with anything, and any operation whose value at 0 (with its scalar
operands known at plan time) is 0, so ``X / 2``, ``X ** 2``, ``X > 0.5``,
``maximum(X, 0)``, ``abs(X)``, ``sqrt(X)`` stay sparse while ``X + 1``,
``exp(X)`` and ``X == 0`` are dense. Two sparse operands combine sparsely under
``*`` (broadcasting too) and, of one shape, under ``+ - maximum minimum`` (SciPy's
intersection and union kernels).
"""

from __future__ import annotations

import math

from .. import ops
from .types import Type

# Two sparse operands of one shape: the operations SciPy combines without densifying.
SPARSE_PAIRS = ("+", "-", "*", "maximum", "minimum")


def density(t: Type) -> float:
    return t.nonzeros / max(1, t.entries)


def product(a: Type, b: Type, trans_a: bool, trans_b: bool) -> tuple[str, float | None]:
    """sparse @ sparse is sparse (an entry is non-zero when some of the k pairs meet);
    a product with a dense operand is dense."""
    if not (a.is_sparse and b.is_sparse):
        return "dense", None
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    meet = density(a) * density(b)
    if meet >= 1.0:
        return "sparse", float(m * n)
    return "sparse", -math.expm1(k * math.log1p(-meet)) * m * n


def product_flops(a: Type, b: Type, m: int, k: int, n: int) -> float:
    """Multiply-adds a product performs: a sparse operand contributes only its non-zeros."""
    if a.is_sparse and b.is_sparse:
        return 2.0 * a.nonzeros * density(b) * n
    if a.is_sparse:
        return 2.0 * a.nonzeros * n
    if b.is_sparse:
        return 2.0 * b.nonzeros * m
    return 2.0 * m * k * n


def _zero_preserving(operator: str, operands: list[tuple[Type, float | None]], sparse_at: int) -> bool:
    """Whether the operation gives 0 wherever the sparse operand ``sparse_at`` is 0, every other
    operand being a scalar known before the run."""
    values = []
    for index, (t, known) in enumerate(operands):
        if index == sparse_at:
            values.append(0.0)
        elif t.is_scalar and known is not None:
            values.append(known)
        else:
            return False
    out = ops.apply(operator, *values)
    return out == 0.0  # nan (0/0, log 0) is not 0


def elementwise(operator: str, operands: list[tuple[Type, float | None]],
                shape: tuple[int, int]) -> tuple[str, float | None]:
    """The storage and non-zero estimate of an elementwise result of ``shape``; ``operands``
    are (type, the value of a scalar known before the run, else None)."""
    sparse = [i for i, (t, _) in enumerate(operands) if t.is_matrix and t.is_sparse]
    if not sparse or operator == "where":
        return "dense", None
    entries = shape[0] * shape[1]
    if len(sparse) == 2 and len(operands) == 2:
        a, b = operands[0][0], operands[1][0]
        if operator != "*" and (operator not in SPARSE_PAIRS or a.shape != b.shape):
            return "dense", None  # SciPy broadcasts two sparse operands only under multiply
        da, db = density(a), density(b)
        share = da * db if operator == "*" else da + db - da * db
        return "sparse", share * entries
    if len(sparse) > 1:
        return "dense", None
    (t, _) = operands[sparse[0]]
    spread = entries / max(1, t.entries)  # a sparse row or column broadcast over the result
    if operator == "*" or _zero_preserving(operator, operands, sparse[0]):
        return "sparse", t.nonzeros * spread
    return "dense", None


def region(x: Type, rows: int, cols: int) -> float:
    """Non-zeros in a rows x cols region of x, the non-zeros spread evenly."""
    return density(x) * rows * cols
