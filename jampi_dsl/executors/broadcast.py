"""The broadcast product: the small operand is shipped once to every executor
and each task multiplies its blocks of the big operand by it; the big operand
never moves (no shuffle of it, no barrier stage).

For ``C = Big @ S`` the task holding Big's block (i, j) computes
``Big[i, j] @ S[rows of block column j]``, a partial row strip of C; strips of
one block row are summed (a shuffle of m×n partials, which is small because S
is). ``C = S @ Big`` is the mirror image, by block columns. The task side lives in
:mod:`.blocktasks`: a task that imported this module would import the planner
(and networkx) into every Python worker for good.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import spark_internals
from ..planner import ir
from ..planner.methods import shipped_side
from . import blocktasks as bt
from .base import Executor, RunContext, handles
from .blockframes import RawBlockSerializer
from .distributed import DistMatrix
from .holdings import hold
from .spark import as_dist, combine_gemm, to_local


def _big_operand(value: Any, transposed: bool, ctx: RunContext) -> DistMatrix:
    matrix = as_dist(value, ctx)
    # A recipe transposes for free (tasks read the transposed region); a cached matrix is shuffled once.
    return matrix.transpose() if transposed else matrix


def broadcast_product(ctx: RunContext, big: DistMatrix, small: np.ndarray, big_on_left: bool,
                      keep: bool = True) -> DistMatrix:
    """``keep``: computed now and kept; else a recipe its reader runs (a result the plan collects
    comes to the driver in this one job)."""
    sc = ctx.get_spark().sparkContext
    dtype = np.result_type(big.dtype, small.dtype)
    # A sparse side is shipped as CSR; with a sparse big operand the partials are CSR too.
    small = sp.csr_array(small, dtype=dtype) if sp.issparse(small) else np.ascontiguousarray(small, dtype=dtype)
    sparse_result = big.sparse and sp.issparse(small)
    small_bc = hold(sc.broadcast(small))  # needed until the result is released: a lost block is remade with it
    gr, gc = big.grid
    if big_on_left:
        shape, block, groups, along = (big.shape[0], small.shape[1]), (big.block[0], small.shape[1]), gr, gc
    else:
        shape, block, groups, along = (small.shape[0], big.shape[1]), (small.shape[0], big.block[1]), gc, gr
    parts = big.rdd.mapPartitions(partial(bt.broadcast_partials, small_bc, big_on_left, big.shape, big.block))
    if not keep and along > 1:
        # The plan collects this result: its partial strips come to the driver as raw frames and
        # are summed there, one stage instead of two (a loop saves a shuffle per product).
        spark_internals.set_deserializer(parts, RawBlockSerializer())
        return _sum_on_driver(parts.collect(), shape, block, dtype, sparse_result)
    if along == 1:
        # Each output block comes from exactly one input block, already in output order: no shuffle.
        result = parts
    else:
        cols = 1 if big_on_left else groups
        moved = parts.partitionBy(groups, bt.GridPartitioner(cols))
        result = moved.mapPartitions(partial(bt.sum_partials, dtype), preservesPartitioning=True)
    # Lineage cut: a later job must not serialize this stage, whose broadcast is released with the value.
    product = DistMatrix(result, shape, block, dtype, sparse=sparse_result)
    return product.checkpoint() if keep else product


def _sum_on_driver(pieces, shape, block, dtype, sparse: bool):
    """The product from its partial strips, ``((bi, bj), part)`` with one key per output block."""
    if sparse:
        rows, cols, values = [], [], []
        for key, part in pieces:
            (r0, _), (c0, _) = bt.bounds(key, shape, block)
            coo = part.tocoo()
            rows.append(coo.row.astype(np.int64) + r0)
            cols.append(coo.col.astype(np.int64) + c0)
            values.append(coo.data)
        if not values:
            return sp.csr_array(shape, dtype=dtype)
        # COO to CSR sums the entries two strips give one position
        return sp.csr_array((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                            shape=shape, dtype=dtype)
    out = np.zeros(shape, dtype)
    for key, part in pieces:
        (r0, r1), (c0, c1) = bt.bounds(key, shape, block)
        out[r0:r1, c0:c1] += part
    return out


class BroadcastExecutor(Executor):
    name = "broadcast"
    placement = "distributed"

    @handles(ir.Gemm)
    def gemm(self, node: ir.Gemm, inputs, ctx: RunContext):
        return combine_gemm(node, self.matmul(node, inputs[:2], ctx), inputs[2], ctx)

    @handles(ir.MatMul)
    def matmul(self, node: ir.MatMul | ir.Gemm, inputs, ctx: RunContext):
        a, b = inputs
        # The plan says which side is shipped (the smaller); a product run outside a plan derives it.
        step = ctx.step if ctx.step is not None and ctx.step.node is node else None
        big_on_left = (step.ships if step is not None and step.ships else shipped_side(node)) == "b"
        keep = not (step is not None and step.collect and type(node) is ir.MatMul)
        if big_on_left:
            small = to_local(b)
            small = small.T if node.trans_b else small
            return broadcast_product(ctx, _big_operand(a, node.trans_a, ctx), small, True, keep)
        small = to_local(a)
        small = small.T if node.trans_a else small
        return broadcast_product(ctx, _big_operand(b, node.trans_b, ctx), small, False, keep)
