"""The distributed executors: blockwise work on DistMatrix values ("spark"),
and the product methods that produce them (cannon, broadcast, mllib).

Values here are DistMatrix (possibly still a recipe: ``source`` set and not
cached, so its blocks are made by whichever tasks use them), NumPy arrays that
happen to come from the driver, or Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import ops, sparse
from ..errors import ExecutionError, InputError
from ..planner import ir, linalg
from ..planner.physical import executors_share_files
from . import blocktasks as bt
from . import formats, io
from .base import Executor, OutputValue, RunContext, handles
from .distributed import DistMatrix, choose_block, zip_block_rdds
from .local import format_message, format_value
from .sources import GeneratorSource, NpySource
from .sparse_dist import sparse_block


def slots(ctx: RunContext) -> int:
    from ..cluster import task_slots

    return task_slots(ctx.get_spark())


def default_block(ctx: RunContext, shape: tuple[int, int], dtype: str) -> tuple[int, int]:
    return choose_block(shape, slots(ctx), np.dtype(dtype).itemsize)


@dataclass(frozen=True)
class WrittenNpy:
    """A product its Cannon tasks wrote into a staged ``.npy`` file (the plan's write-through).

    Its one consumer, the Save of that file, only records it; the run commits
    it with its other outputs, so a failure later still leaves nothing behind.
    """

    path: str
    shape: tuple[int, int]
    dtype: np.dtype


def _not_written(value: Any) -> None:
    if isinstance(value, WrittenNpy):
        raise ExecutionError(f"the product was written to {value.path} by its tasks; nothing else can use it")


def as_dist(value: Any, ctx: RunContext, like: DistMatrix | None = None) -> DistMatrix:
    """A DistMatrix for ``value``, on ``like``'s layout when given (a driver array is shipped once)."""
    _not_written(value)
    if isinstance(value, DistMatrix):
        if like is not None and value.layout != like.layout:
            return value.rechunk(like.block)
        return value
    if sp.issparse(value):
        block = like.block if like is not None else sparse_block(value.shape, slots(ctx))
        return DistMatrix.from_scipy(ctx.get_spark(), value, block)
    array = np.asarray(value)
    block = like.block if like is not None else default_block(ctx, array.shape, str(array.dtype))
    return DistMatrix.from_numpy(ctx.get_spark(), array, block)


def to_local(value: Any) -> Any:
    _not_written(value)
    return value.to_driver() if isinstance(value, DistMatrix) else value


def _shape_of(value: Any) -> tuple[int, int]:
    return value.shape if isinstance(value, (DistMatrix, np.ndarray, WrittenNpy)) or sp.issparse(value) else ()


def _is_sparse(value: Any) -> bool:
    return value.sparse if isinstance(value, DistMatrix) else sp.issparse(value)


def shares_files(ctx: RunContext) -> bool:
    """Executors see the driver's files: local mode, or a cluster whose master is on this machine."""
    return executors_share_files(ctx.get_spark().sparkContext.master)


def _load_sparse(node: ir.Load, options: dict, ctx: RunContext) -> DistMatrix:
    """Coordinate Parquet is read by the tasks when they see the driver's files; other sparse
    files are read on the driver and shipped as CSR blocks."""
    block = sparse_block(node.shape, slots(ctx))
    if node.format == "parquet" and options.get("form") == "coordinate" and shares_files(ctx):
        matrix = DistMatrix.from_coordinate_parquet(ctx.get_spark(), node.path, node.shape, node.dtype, block,
                                                    node.span)
    else:
        local = io.load_local(node.path, node.format, node.dtype, node.shape, options, node.span, "sparse")
        if local.shape != node.shape:
            raise InputError(f"{node.path} changed since the plan was made: {local.shape} instead of {node.shape}",
                             node.span)
        matrix = as_dist(sparse.conform(local, "sparse", node.dtype), ctx)
    if options.get("finite"):
        bad = matrix.map_blocks(_non_finite_values).sum()
        if bad:
            raise InputError(f"{node.path} has {int(bad)} non-finite values (finite=true)", node.span)
    return matrix


def _non_finite_values(block):
    out = block.copy()
    out.data = (~np.isfinite(block.data)).astype(block.dtype)
    return out


class SparkExecutor(Executor):
    """Non-product nodes whose inputs (or consumers) are distributed."""

    name = "spark"
    placement = "distributed"

    @handles(ir.Generate)
    def generate(self, node: ir.Generate, inputs, ctx: RunContext):
        source = GeneratorSource(node.kind, node.shape, node.dtype, node.seed)
        return DistMatrix.from_source(ctx.get_spark(), source, default_block(ctx, node.shape, node.dtype))

    @handles(ir.Load)
    def load(self, node: ir.Load, inputs, ctx: RunContext):
        options = dict(node.options)
        if node.type.is_sparse:
            return _load_sparse(node, options, ctx)
        if node.format == "npy" and shares_files(ctx):
            source = NpySource.open(node.path)
            if source.shape != node.shape:
                raise InputError(f"{node.path} changed since the plan was made", node.span)
            if source.dtype != np.dtype(node.dtype):
                source = NpySource(source.path, source.shape, node.dtype, source.fortran_order, source.offset,
                                   file_dtype=source.file_dtype)
            matrix = DistMatrix.from_source(ctx.get_spark(), source, default_block(ctx, node.shape, node.dtype))
        else:
            array = io.load_local(node.path, node.format, node.dtype, node.shape, options, node.span)
            matrix = as_dist(array, ctx)
        if options.get("finite"):
            bad = matrix.map_blocks(lambda b: (~np.isfinite(b)).astype(b.dtype)).sum()
            if bad:
                raise InputError(f"{node.path} has {int(bad)} non-finite values (finite=true)", node.span)
        return matrix

    @handles(ir.Frame)
    def frame(self, node: ir.Frame, inputs, ctx: RunContext):
        # Through the driver as one Arrow transfer; validation is shared with Parquet files.
        return as_dist(formats.table_to_matrix(node.frame.toArrow(), node.form, node.shape, node.dtype,
                                               "DataFrame", None), ctx)

    @handles(ir.Transpose)
    def transpose(self, node, inputs, ctx):
        return as_dist(inputs[0], ctx).transpose()

    @handles(ir.Binary)
    def binary(self, node: ir.Binary, inputs, ctx: RunContext):
        a, b = inputs
        if isinstance(a, float):
            return as_dist(b, ctx).scalar(node.operator, a, scalar_on_left=True)
        if isinstance(b, float):
            return as_dist(a, ctx).scalar(node.operator, b)
        shape = node.type.shape
        a_full, b_full = _shape_of(a) == shape, _shape_of(b) == shape
        if a_full and not b_full:  # b is a row, a column or 1x1 that broadcasts across a
            return as_dist(a, ctx).with_vector(node.operator, to_local(b))
        if b_full and not a_full:
            return as_dist(b, ctx).with_vector(node.operator, to_local(a), vector_on_left=True)
        if not a_full:  # a column against a row: both small, the result is made here and shipped
            return as_dist(ops.apply(node.operator, to_local(a), to_local(b)), ctx)
        if _is_sparse(a) != _is_sparse(b):  # the sparse side moves to the dense side's blocks, not
            dense_side = as_dist(b if _is_sparse(a) else a, ctx)  # a dense matrix to full-width strips
            if _is_sparse(a):
                return as_dist(a, ctx, like=dense_side).elementwise(node.operator, dense_side)
            return dense_side.elementwise(node.operator, as_dist(b, ctx, like=dense_side))
        left = a if isinstance(a, DistMatrix) else None
        if left is None:
            right = as_dist(b, ctx)
            return as_dist(a, ctx, like=right).elementwise(node.operator, right)
        return left.elementwise(node.operator, as_dist(b, ctx, like=left))

    @handles(ir.Unary)
    def unary(self, node: ir.Unary, inputs, ctx):
        return as_dist(inputs[0], ctx).unary(node.operator)

    @handles(ir.Reduce)
    def reduce(self, node: ir.Reduce, inputs, ctx):
        matrix = as_dist(inputs[0], ctx)
        if node.axis is not None:
            return matrix.reduce_axis(node.operator, node.axis)  # a row or column: back on the driver
        if node.operator in ("max", "min"):
            return matrix.extreme(node.operator)
        if node.operator == "mean":
            return matrix.sum() / (matrix.shape[0] * matrix.shape[1])
        if node.operator == "nnz":
            return matrix.count_nonzero()
        return float({"sum": matrix.sum, "trace": matrix.trace, "norm": matrix.norm}[node.operator]())

    @handles(ir.Factor)
    def factor(self, node: ir.Factor, inputs, ctx: RunContext):
        """qr and svd of a distributed matrix (see .factorize); the parts of one are computed once."""
        from . import factorize

        memo = self.__dict__.setdefault("_factored", {})
        key = (node.operator, node.x.uid, node.k, node.sketch)
        parts = memo.get(key)
        if parts is None:
            a, dtype = as_dist(inputs[0], ctx), np.dtype(node.type.dtype)
            if node.operator == "qr":
                parts = factorize.qr(a, dtype)
            elif linalg.svd_is_randomized(a.shape, node.k):
                parts = factorize.randomized_svd(a, dtype, node.k, node.sketching)
            else:
                parts = factorize.thin_svd(a, dtype, node.k)
            memo[key] = parts
        return parts[node.part]

    @handles(ir.Solve)
    def solve(self, node: ir.Solve, inputs, ctx: RunContext):
        a, b = inputs
        dtype = np.dtype(node.type.dtype)
        if node.operator == "solve":
            return solve_many(ctx, to_local(a).astype(dtype, copy=False), as_dist(b, ctx), dtype)
        return lstsq_tsqr(as_dist(a, ctx), as_dist(b, ctx), dtype)

    @handles(ir.Save)
    def save(self, node: ir.Save, inputs, ctx: RunContext):
        (x,) = inputs
        if isinstance(x, WrittenNpy) and x.path == node.path:
            # Staged by the product step already: committed with the run's other outputs.
            ctx.emit(OutputValue("save", node.path, None, f"saved {node.path} (written by the Cannon tasks)"))
            return None
        if node.format == "npy" and isinstance(x, DistMatrix) and shares_files(ctx):
            # Each task writes its own block into the file: the matrix never passes through the driver.
            ctx.staged.stage(node.path, x.save_npy)
            ctx.emit(OutputValue("save", node.path, None, f"saved {node.path}"))
            return None
        array = to_local(x)
        io.save_local(ctx.staged, node.path, node.format, array, dict(node.options))
        ctx.emit(OutputValue("save", node.path, array, f"saved {node.path}"))
        return None

    @handles(ir.Print)
    def print_(self, node: ir.Print, inputs, ctx: RunContext):
        value = to_local(inputs[0])
        ctx.emit(OutputValue("print", node.label, value, format_value(node.label, value)))
        return None

    @handles(ir.Input)
    def input(self, node: ir.Input, inputs, ctx: RunContext):
        return as_dist(ctx.env[node.slot], ctx)

    @handles(ir.Message)
    def message(self, node: ir.Message, inputs, ctx: RunContext):
        text = format_message(node.texts, [to_local(v) for v in inputs])
        ctx.emit(OutputValue("print", text.split("\n")[0], text, text))
        return None

    @handles(ir.Result)
    def result(self, node: ir.Result, inputs, ctx: RunContext):
        ctx.emit(OutputValue("result", node.label, to_local(inputs[0])))
        return None


def _operand(value: Any, ctx: RunContext):
    """What a product task reads: a recipe's source (tasks make their own blocks), else a DistMatrix."""
    if isinstance(value, DistMatrix) and value.source is not None and not value.is_cached:
        return value.source
    return as_dist(value, ctx)


def combine_gemm(node: ir.Gemm, product: DistMatrix, c: Any, ctx: RunContext) -> DistMatrix:
    out = product if node.alpha == 1.0 else product.scalar("*", node.alpha)
    if node.beta == 0.0:
        return out
    addend = as_dist(c, ctx, like=out)
    if node.beta == 1.0:
        return out.elementwise("+", addend)
    if node.beta == -1.0:
        return out.elementwise("-", addend)
    return out.elementwise("+", addend.scalar("*", node.beta))


class CannonExecutor(Executor):
    name = "cannon"
    placement = "distributed"

    def _product(self, node, a, b, ctx: RunContext, write: bool = True, **gemm) -> DistMatrix | WrittenNpy:
        """The stage; straight into the staged output file when the plan says so (``step.writes``)."""
        from .cannon import CannonConfig, cannon_matmul

        config = ctx.options.get("cannon_config") or CannonConfig()
        spark, a, b = ctx.get_spark(), _operand(a, ctx), _operand(b, ctx)
        grid = ctx.step.grid if ctx.step is not None and ctx.step.node is node else None  # the plan's grid

        def run(output_npy: str | None = None):
            return cannon_matmul(spark, a, b, trans_a=node.trans_a, trans_b=node.trans_b, config=config,
                                 grid=grid, output_npy=output_npy, **gemm)

        path = getattr(ctx.step, "writes", None)
        if write and path is not None and ctx.step.node is node and shares_files(ctx):
            ctx.staged.stage(path, run)
            return WrittenNpy(path, node.type.shape, np.dtype(node.type.dtype))
        return run()

    @handles(ir.MatMul)
    def matmul(self, node: ir.MatMul, inputs, ctx: RunContext):
        return self._product(node, inputs[0], inputs[1], ctx)

    @handles(ir.Gemm)
    def gemm(self, node: ir.Gemm, inputs, ctx: RunContext):
        from .cannon.feed import is_source

        a, b, c = inputs
        if node.beta == 0.0:
            return self._product(node, a, b, ctx, alpha=node.alpha)
        addend = _operand(c, ctx)
        if is_source(addend) and np.dtype(addend.dtype) == np.dtype(node.type.dtype):
            # The tasks make their block of the addend and finish C themselves: no second pass.
            return self._product(node, a, b, ctx, alpha=node.alpha, beta=node.beta, addend=addend)
        product = self._product(node, a, b, ctx, write=False)  # then the Save writes it, from its tasks
        return combine_gemm(node, product, c if is_source(addend) else addend, ctx)


def kept_folder(ctx: RunContext, nbytes: int) -> str | None:
    """Where a big kept value goes as a shared file (executors on this machine), else None:
    Spark's cache (memory, then disk) keeps it."""
    from .distributed import _scratch_dir

    sc = ctx.get_spark().sparkContext
    return _scratch_dir(sc, nbytes) if shares_files(ctx) else None


def keep(value: Any, ctx: RunContext) -> Any:
    """A value the plan materialises: distributed once, computed now, its lineage cut."""
    if isinstance(value, DistMatrix):
        if value.sparse:  # CSR blocks stay in Spark's cache (a shared file holds dense blocks only)
            return value.checkpoint()
        folder = kept_folder(ctx, value.nbytes)
        return value.keep_in_file(folder) if folder else value.checkpoint()
    if isinstance(value, np.ndarray):  # a product method that returns to the driver (mllib)
        return as_dist(value, ctx)
    return value


SOLVE_BLOCK_BYTES = 256 * 2**20  # columns of B per task in solve(A, B): a block of at most this


def solve_many(ctx: RunContext, a: np.ndarray, b: DistMatrix, dtype: np.dtype) -> DistMatrix:
    """``solve(A, B)`` for a small A and a distributed B of many columns: A is factored once
    on the driver, its LU factors broadcast, and each task solves its columns of B."""
    import scipy.linalg

    from .holdings import hold

    n = a.shape[0]
    lu, piv = scipy.linalg.lu_factor(a, check_finite=False)
    if np.any(np.diag(lu) == 0):
        raise np.linalg.LinAlgError("Singular matrix")
    factors = hold(ctx.get_spark().sparkContext.broadcast((lu, piv)))
    cols = max(1, min(b.shape[1], SOLVE_BLOCK_BYTES // (n * dtype.itemsize)))
    whole_columns = b.rechunk((n, cols))  # a task needs every row of its columns
    rdd = whole_columns.rdd.mapPartitions(partial(bt.lu_solve_blocks, factors, dtype), preservesPartitioning=True)
    return DistMatrix(rdd, b.shape, whole_columns.block, dtype).checkpoint()


def lstsq_tsqr(a: DistMatrix, b: DistMatrix, dtype: np.dtype) -> np.ndarray:
    """``lstsq(A, B)`` for a tall distributed A by TSQR: each row block gives R_i and
    Q_i.T @ B_i; min ||A X - B|| equals min ||[R_i] X - [Q_i.T B_i]||, a small problem solved
    on the driver (gelsd: NumPy's minimum-norm answer when A is rank-deficient)."""
    import scipy.linalg

    rows = a.block[0]
    a_rows, b_rows = a.rechunk((rows, a.shape[1])), b.rechunk((rows, b.shape[1]))
    pairs = zip_block_rdds(a_rows.rdd, b_rows.rdd)
    parts = sorted(pairs.mapPartitions(partial(bt.tsqr_partials, dtype)).collect(), key=lambda p: p[0])
    r = np.vstack([p[1] for p in parts])
    c = np.vstack([p[2] for p in parts])
    x = scipy.linalg.lstsq(r, c, lapack_driver="gelsd", check_finite=False)[0]
    return np.ascontiguousarray(x, dtype=dtype)
