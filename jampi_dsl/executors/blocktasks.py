"""What Spark tasks run on the blocks of a :class:`~.distributed.DistMatrix`.

Module-level functions (bound with ``functools.partial``) so that tasks pickle
them by reference, not by value. Every task reads its whole input iterator:
PySpark only returns a Python worker to its pool for reuse when the task
consumed all its input; otherwise the next task pays for a fresh worker and a
fresh ``import numpy`` (measured: 0.3-0.8 s per worker on this machine).
"""

from __future__ import annotations

import numpy as np

from .. import ops


def grid_of(shape, block) -> tuple[int, int]:
    """Blocks per column and per row: ``ceil(shape / block)``."""
    return -(-shape[0] // block[0]), -(-shape[1] // block[1])


def bounds(key, shape, block):
    """Global ``(rows, cols)`` ranges of block ``key``; edge blocks are cut to the matrix."""
    r0, c0 = key[0] * block[0], key[1] * block[1]
    return (r0, min(r0 + block[0], shape[0])), (c0, min(c0 + block[1], shape[1]))


class GridPartitioner:
    """Partition function for block keys: ``(bi, bj) -> bi * cols + bj`` (row-major grid order).

    Equal for equal grid widths, so PySpark's ``partitionBy`` sees that an RDD
    already laid out on this grid needs no shuffle.
    """

    __slots__ = ("cols",)

    def __init__(self, cols: int):
        self.cols = int(cols)

    def __call__(self, key) -> int:
        return key[0] * self.cols + key[1]

    def __eq__(self, other) -> bool:
        return isinstance(other, GridPartitioner) and other.cols == self.cols

    def __hash__(self) -> int:
        return hash((GridPartitioner, self.cols))


def make_block(source, shape, block, grid_cols, split, items):
    for _ in items:
        pass
    key = divmod(split, grid_cols)
    yield key, source.region(*bounds(key, shape, block))


def same_blocks(items):
    yield from items


def map_blocks(fn, items):
    for key, b in items:
        yield key, fn(b)


def zip_blocks(fn, pairs):
    for (ka, a), (kb, b) in pairs:
        if ka != kb:
            raise RuntimeError(f"zipped blocks {ka} and {kb}: the two matrices are not on the same grid")
        yield ka, fn(a, b)


def with_source(fn, source, source_left, shape, block, items):
    """``fn(source block, block)`` (or the other way round), making the source's block in the task."""
    for key, b in items:
        s = source.region(*bounds(key, shape, block))
        yield key, (fn(s, b) if source_left else fn(b, s))


def is_sparse_block(b) -> bool:
    return getattr(b, "format", None) == "csr"  # a SciPy CSR block, told apart without importing SciPy


def sparse_elementwise(op, args):
    """``op`` over a sparse block and its other operands, a CSR block again: the planner sends
    here only operations whose result the contract keeps sparse (they map 0 to 0)."""
    from .. import sparse  # SciPy: imported only by tasks that hold sparse blocks

    dtype = np.result_type(*[a.dtype for a in args if hasattr(a, "dtype")])
    return sparse.conform(sparse.elementwise(op, list(args), True), "sparse", dtype.name)


def binary(op, a, b):
    if is_sparse_block(a) or is_sparse_block(b):
        return sparse_elementwise(op, (a, b))
    return ops.apply(op, a, b)


def scalar(op, value, on_left, b):
    if is_sparse_block(b):
        return sparse_elementwise(op, (float(value), b) if on_left else (b, float(value)))
    # A Python float: NumPy keeps a float32 block float32 with it
    return ops.apply(op, float(value), b) if on_left else ops.apply(op, b, float(value))


def with_vector(op, vector, vector_left, shape, block, items):
    """``op`` of each block with its stretch of a 1xc row, an rx1 column or a 1x1 (NumPy broadcasting)."""
    for key, b in items:
        (r0, r1), (c0, c1) = bounds(key, shape, block)
        part = vector[:, c0:c1] if vector.shape[0] == 1 and vector.shape[1] > 1 else vector
        part = part[r0:r1, :] if part.shape[0] > 1 else part
        if is_sparse_block(b):
            yield key, sparse_elementwise(op, (part, b) if vector_left else (b, part))
        else:
            yield key, (ops.apply(op, part, b) if vector_left else ops.apply(op, b, part))


def broadcast_partials(small_bc, big_on_left: bool, shape, block, items):
    """The broadcast product's task: each block of the big operand times its slice of the small one."""
    small = small_bc.value
    for key, b in items:
        (r0, r1), (c0, c1) = bounds(key, shape, block)
        part = b @ small[c0:c1, :] if big_on_left else small[:, r0:r1] @ b
        if is_sparse_block(b) and is_sparse_block(small):
            part = part.tocsr()  # sparse x sparse: a CSR partial
        yield ((key[0], 0) if big_on_left else (0, key[1])), part


def _add_into(total, part):
    total += part
    return total


def sum_partials(dtype, items):
    """The broadcast product's partial strips of one output block, summed."""
    sums: dict = {}
    for key, part in items:
        if key in sums:
            sums[key] = sums[key] + part if is_sparse_block(part) else _add_into(sums[key], part)
        else:
            sums[key] = part.astype(dtype) if is_sparse_block(part) else np.array(part, dtype=dtype, copy=True)
    yield from sums.items()


def unary(name, b):
    return sparse_elementwise(name, (b,)) if is_sparse_block(b) else ops.apply(name, b)


def reduce_axis_block(kind, axis, shape, block, items):
    """A block's partial ``kind`` along ``axis``, with where it lies: (offset, values[, indices]).
    Sums are float64 partials; arg* carry global indices, so the driver only compares."""
    for key, b in items:
        (r0, _), (c0, _) = bounds(key, shape, block)
        offset = c0 if axis == 0 else r0
        if is_sparse_block(b):  # sums, or extremes that count the implicit zeros (SciPy's)
            if kind in ("sum", "mean"):
                part = b.sum(axis=axis, dtype=np.float64)
            elif kind in ("max", "min"):
                part = getattr(b, kind)(axis=axis)
                part = part.toarray() if hasattr(part, "toarray") else part
            else:
                raise ValueError(f"{kind} along an axis of a sparse block runs on the driver")
            yield offset, np.asarray(part).reshape((1, -1) if axis == 0 else (-1, 1)), None
        elif kind in ("sum", "mean"):
            yield offset, np.sum(b, axis=axis, dtype=np.float64, keepdims=True), None
        elif kind in ("max", "min"):
            yield offset, getattr(np, kind)(b, axis=axis, keepdims=True), None
        else:
            pick = np.argmax if kind == "argmax" else np.argmin
            index = pick(b, axis=axis, keepdims=True)
            values = np.take_along_axis(b, index, axis=axis)
            yield offset, values, index + (r0 if axis == 0 else c0)


def reduce_block(kind, shape, block, items):
    """One float64 partial result per block, so float32 matrices do not lose precision in the sum."""
    for key, b in items:
        if is_sparse_block(b):
            yield _reduce_sparse(kind, b)
        elif kind == "sum":
            yield float(np.sum(b, dtype=np.float64))
        elif kind in ("max", "min"):
            yield float(getattr(np, kind)(b))
        elif kind == "nnz":  # the ragged edge's padding is zeros, never counted
            yield float(np.count_nonzero(b))
        elif kind == "sumsq":
            v = b.ravel().astype(np.float64, copy=False)
            yield float(np.dot(v, v))
        elif kind == "trace":
            (r0, r1), (c0, c1) = bounds(key, shape, block)
            lo, hi = max(r0, c0), min(r1, c1)  # the main diagonal's stretch through this block
            yield float(np.trace(b[lo - r0 : hi - r0, lo - c0 : hi - c0], dtype=np.float64)) if lo < hi else 0.0
        else:
            raise ValueError(f"unknown reduction {kind!r}")


def _reduce_sparse(kind, b) -> float:
    """A whole-matrix reduction of a CSR block from its stored values (the others are zeros)."""
    if kind == "nnz":
        return float(b.nnz)
    values = b.data.astype(np.float64, copy=False)
    if kind == "sum":
        return float(values.sum())
    if kind == "sumsq":
        return float(np.dot(values, values))
    raise ValueError(f"reduction {kind!r} of a sparse block runs on the driver")


def cut_block(shape, block, new_block, transpose, items):
    """Split each block into the pieces that fall into blocks of ``new_block``.

    With ``transpose`` the block is first transposed (so ``shape``/``block``
    describe the transposed matrix). Yields ``(new key, (row offset, col
    offset, piece))`` for the shuffle.
    """
    for key, b in items:
        if transpose:
            key, b = (key[1], key[0]), b.T
        (r0, r1), (c0, c1) = bounds(key, shape, block)
        for ni in range(r0 // new_block[0], (r1 - 1) // new_block[0] + 1):
            for nj in range(c0 // new_block[1], (c1 - 1) // new_block[1] + 1):
                (nr0, nr1), (nc0, nc1) = bounds((ni, nj), shape, new_block)
                gr0, gr1, gc0, gc1 = max(r0, nr0), min(r1, nr1), max(c0, nc0), min(c1, nc1)
                piece = np.ascontiguousarray(b[gr0 - r0 : gr1 - r0, gc0 - c0 : gc1 - c0])
                yield (ni, nj), (gr0 - nr0, gc0 - nc0, piece)


def assemble_block(shape, block, dtype, items):
    """Put the pieces of each block (as made by :func:`cut_block`) back together."""
    pieces: dict = {}
    for key, piece in items:
        pieces.setdefault(key, []).append(piece)
    for key, parts in pieces.items():
        (r0, r1), (c0, c1) = bounds(key, shape, block)
        out = np.empty((r1 - r0, c1 - c0), dtype=dtype)
        if sum(p.size for _, _, p in parts) != out.size:
            raise RuntimeError(f"block {key}: pieces cover {sum(p.size for _, _, p in parts)} of {out.size} entries")
        for i, j, p in parts:
            out[i : i + p.shape[0], j : j + p.shape[1]] = p
        yield key, out


def write_blocks(path, offset, shape, block, dtype, items):
    """Write each block into its place in a preallocated C-order ``.npy`` file (shared by memory map)."""
    data = np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=shape)
    written = 0
    for key, b in items:
        (r0, r1), (c0, c1) = bounds(key, shape, block)
        data[r0:r1, c0:c1] = b
        written += 1
    del data
    yield written


def lu_solve_blocks(factors_bc, dtype, items):
    """``solve(A, B)``'s task: the columns of B in this block, solved with A's broadcast LU factors."""
    import scipy.linalg

    lu, piv = factors_bc.value
    for key, b in items:
        yield key, scipy.linalg.lu_solve((lu, piv), b, check_finite=False).astype(dtype, copy=False)


def tsqr_partials(dtype, pairs):
    """TSQR's first pass for ``lstsq(A, B)``: for this row block, A_i = Q_i R_i and Q_i.T @ B_i.
    The driver solves the small stacked problem; Q_i itself never leaves the task."""
    for (ka, a), (kb, b) in pairs:
        if ka[0] != kb[0]:
            raise RuntimeError(f"row blocks {ka} and {kb}: A and B are not on the same row grid")
        q, r = np.linalg.qr(a.astype(dtype, copy=False), mode="reduced")
        yield ka[0], r, q.T @ b.astype(dtype, copy=False)
