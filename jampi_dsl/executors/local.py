"""The local executor: NumPy on the driver.

Scalars are kept as Python floats, not NumPy scalars: under NumPy 2's promotion
rules a ``np.float64`` scalar would silently widen a float32 matrix, while a
Python float does not (the contract says float32 stays float32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops, sparse
from ..errors import ExecutionError, InputError
from ..planner import ir, linalg
from . import blockgen, formats, io, sparse_io
from .base import Executor, OutputValue, RunContext, handles


def _operand(x: np.ndarray, transposed: bool) -> np.ndarray:
    return x.T if transposed else x


def reduce_array(operator: str, axis: int | None, x: np.ndarray) -> Any:
    """A reduction of a driver-side matrix: a Python float, or a 1xc / rx1 matrix along ``axis``."""
    if sparse.is_sparse(x):
        return sparse.reduce(operator, axis, x)
    if operator == "nnz":
        return float(np.count_nonzero(x))
    if axis is None:
        if operator == "trace":
            return float(np.trace(x))
        if operator == "norm":
            return float(np.linalg.norm(x))
        return float(getattr(np, operator)(x))
    out = getattr(np, operator)(x, axis=axis, keepdims=True)
    return out.astype(np.float64) if operator.startswith("arg") else out


def format_value(label: str, value: Any) -> str:
    """What ``print`` shows: a scalar's value, or a matrix's shape, dtype and corners."""
    if sparse.is_sparse(value):
        rows, cols = value.shape
        return f"{label}: {rows}x{cols} {value.dtype} sparse, {value.nnz} stored\n  {sparse.describe(value)}"
    if not isinstance(value, np.ndarray):
        return f"{label} = {value!r}"
    rows, cols = value.shape
    head = f"{label}: {rows}x{cols} {value.dtype}"
    with np.printoptions(precision=6, edgeitems=3, threshold=36, linewidth=100, suppress=False):
        body = np.array2string(value, prefix="  ")
    return f"{head}\n  {body}"


def start_index(value: float, extent: int, size: int) -> int:
    """Where a region of ``size`` along an axis of ``extent`` starts, from an index computed at run
    time (negative counts from the end, as in NumPy)."""
    if value != int(value):
        raise ExecutionError(f"index {value:g} is not a whole number")
    index = int(value)
    if size == 1 and index < 0:
        index += extent
    if not 0 <= index <= extent - size:
        raise ExecutionError(f"index {int(value)} is out of range for {extent}")
    return index


def region(node, x: np.ndarray, i: float, j: float) -> tuple[slice, slice]:
    r, c = start_index(i, x.shape[0], node.rows), start_index(j, x.shape[1], node.cols)
    return slice(r, r + node.rows), slice(c, c + node.cols)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.6g}"


def format_message(texts: tuple, values: list) -> str:
    """``print("iteration", i, "residual", rr)``: one line; a matrix shows on the lines after it."""
    parts, blocks, items = [], [], iter(values)
    for text in texts:
        if text is not None:
            parts.append(text)
            continue
        value = next(items)
        if sparse.is_sparse(value):
            parts.append(f"[{value.shape[0]}x{value.shape[1]} sparse]")
            blocks.append("  " + sparse.describe(value))
        elif isinstance(value, np.ndarray):
            parts.append(f"[{value.shape[0]}x{value.shape[1]}]")
            with np.printoptions(precision=6, edgeitems=3, threshold=36, linewidth=100):
                blocks.append("  " + np.array2string(value, prefix="  "))
        else:
            parts.append(_number(value))
    return "\n".join([" ".join(parts), *blocks])


def _elementwise(node: ir.Node, operator: str, inputs) -> Any:
    if not any(sparse.is_sparse(x) for x in inputs):
        return ops.apply(operator, *inputs)
    out = sparse.elementwise(operator, list(inputs), node.type.is_sparse)
    return sparse.conform(out, node.type.storage, node.type.dtype)


class LocalExecutor(Executor):
    name = "local"
    placement = "local"

    def __init__(self):
        self._factored: dict[tuple, tuple] = {}  # one run's factorisations, by (function, input, k)

    @handles(ir.Const)
    def const(self, node: ir.Const, inputs, ctx):
        return float(node.value)

    @handles(ir.Generate)
    def generate(self, node: ir.Generate, inputs, ctx):
        if node.density is not None:
            return sparse.random(node.kind, node.shape, node.dtype, node.density, node.seed)
        return blockgen.generate(node.kind, node.shape, node.dtype, seed=node.seed)

    @handles(ir.Load)
    def load(self, node: ir.Load, inputs, ctx):
        options = dict(node.options)
        array = io.load_local(node.path, node.format, node.dtype, node.shape, options, node.span, node.storage)
        if array.shape != node.shape:
            raise InputError(
                f"{node.path} changed since the plan was made: {array.shape} instead of {node.shape}", node.span
            )
        if options.get("finite"):
            io.check_finite(array, node.path, node.span)
        return sparse.conform(array, node.storage, node.dtype)

    @handles(ir.Frame)
    def frame(self, node: ir.Frame, inputs, ctx):
        table = node.frame.toArrow()
        if node.type.is_sparse and node.form == "coordinate":
            return sparse_io.table_to_csr(table, node.shape, node.dtype, "DataFrame", None)
        out = formats.table_to_matrix(table, node.form, node.shape, node.dtype, "DataFrame", None)
        return sparse.conform(out, node.storage, node.dtype)

    @handles(ir.Literal)
    def literal(self, node: ir.Literal, inputs, ctx):
        return node.array

    @handles(ir.Transpose)
    def transpose(self, node, inputs, ctx):
        if sparse.is_sparse(inputs[0]):
            return inputs[0].T.tocsr()
        return np.ascontiguousarray(inputs[0].T)

    @handles(ir.MatMul)
    def matmul(self, node: ir.MatMul, inputs, ctx):
        a, b = inputs
        if sparse.is_sparse(a) or sparse.is_sparse(b):
            out = sparse.matmul(_operand(a, node.trans_a), _operand(b, node.trans_b))
            return sparse.conform(out, node.type.storage, node.type.dtype)
        return np.matmul(_operand(a, node.trans_a), _operand(b, node.trans_b))

    @handles(ir.Gemm)
    def gemm(self, node: ir.Gemm, inputs, ctx):
        a, b, c = inputs
        if sparse.is_sparse(a) or sparse.is_sparse(b):
            out = sparse.dense(sparse.matmul(_operand(a, node.trans_a), _operand(b, node.trans_b)))
        else:
            out = np.matmul(_operand(a, node.trans_a), _operand(b, node.trans_b))
        c = sparse.dense(c)
        if out.dtype != np.dtype(node.type.dtype):
            out = out.astype(node.type.dtype)
        if node.alpha != 1.0:
            out *= node.alpha
        if node.beta == 1.0:
            out += c
        elif node.beta == -1.0:
            out -= c
        elif node.beta != 0.0:
            out += node.beta * c
        return out

    @handles(ir.Binary)
    def binary(self, node: ir.Binary, inputs, ctx):
        return _elementwise(node, node.operator, inputs)

    @handles(ir.Unary)
    def unary(self, node: ir.Unary, inputs, ctx):
        return _elementwise(node, node.operator, inputs)

    @handles(ir.Where)
    def where(self, node: ir.Where, inputs, ctx):
        return _elementwise(node, "where", inputs)

    @handles(ir.Store)
    def store(self, node: ir.Store, inputs, ctx):
        return sparse.conform(inputs[0], node.storage, node.type.dtype)

    @handles(ir.Reduce)
    def reduce(self, node: ir.Reduce, inputs, ctx):
        return reduce_array(node.operator, node.axis, inputs[0])

    @handles(ir.Factor)
    def factor(self, node: ir.Factor, inputs, ctx):
        # The parts of one factorisation (Q and R of one qr) are computed once per run.
        key = (node.operator, node.x.uid, node.k, node.sketch)
        parts = self._factored.get(key)
        if parts is None:
            parts = self._factored[key] = linalg.compute(node.operator, [sparse.dense(x) for x in inputs], node.k,
                                                         node.sketch)
        return parts[node.part]

    @handles(ir.Input)
    def input(self, node: ir.Input, inputs, ctx: RunContext):
        value = ctx.env[node.slot]
        if hasattr(value, "to_driver"):  # a DistMatrix kept on the executors by an earlier segment
            value = value.to_driver()
        return value

    @handles(ir.Index)
    def index(self, node: ir.Index, inputs, ctx):
        x, i, j = inputs
        if sparse.is_sparse(x):
            rows, cols = region(node, x, i, j)
            return float(x[rows.start, cols.start]) if node.scalar else x[rows, cols].tocsr()
        part = x[region(node, x, i, j)]
        return float(part[0, 0]) if node.scalar else np.array(part)

    @handles(ir.Update)
    def update(self, node: ir.Update, inputs, ctx):
        x, y, i, j = inputs
        if sparse.is_sparse(x):
            return sparse.update(x, *region(node, x, i, j), y, node.type.dtype)
        out = np.array(x, dtype=node.type.dtype)
        out[region(node, x, i, j)] = sparse.dense(y)
        return out

    @handles(ir.Message)
    def message(self, node: ir.Message, inputs, ctx: RunContext):
        text = format_message(node.texts, inputs)
        ctx.emit(OutputValue("print", text.split("\n")[0], text, text))
        return None

    @handles(ir.Concat)
    def concat(self, node: ir.Concat, inputs, ctx):
        return sparse.concat(list(inputs), node.axis, node.type.is_sparse, node.type.dtype)

    @handles(ir.Solve)
    def solve(self, node: ir.Solve, inputs, ctx):
        return linalg.compute(node.operator, [sparse.dense(x) for x in inputs], None)[0]

    @handles(ir.Save)
    def save(self, node: ir.Save, inputs, ctx: RunContext):
        (x,) = inputs
        io.save_local(ctx.staged, node.path, node.format, x, dict(node.options))
        ctx.emit(OutputValue("save", node.path, x, f"saved {node.path}"))
        return None

    @handles(ir.Print)
    def print_(self, node: ir.Print, inputs, ctx: RunContext):
        (x,) = inputs
        ctx.emit(OutputValue("print", node.label, x, format_value(node.label, x)))
        return None

    @handles(ir.Result)
    def result(self, node: ir.Result, inputs, ctx: RunContext):
        ctx.emit(OutputValue("result", node.label, inputs[0]))
        return None
