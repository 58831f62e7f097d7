"""Sparse matrices on the executors: a DistMatrix whose blocks are SciPy CSR arrays.

The blocks travel between the JVM and Python as raw frames (:mod:`.blockframes`),
and every move of entries between partitions (a Parquet piece to its block, entries
to their place in a transposed or re-blocked grid) goes through
:func:`jampi_dsl.spark_internals.shuffle_bytes` as raw bytes, never pickle. (The side a
broadcast product ships, and the partial strips it sums across partitions, go through
Spark's broadcast and ``partitionBy``, which pickle, as for dense blocks.) A sparse matrix is cut into row strips (a
``g × 1`` grid) unless told otherwise: ``R @ F`` with ``F`` broadcast then needs no
shuffle at all, and ``R.T @ X`` one of dense partial results only.

Coordinate Parquet is read by the tasks: each reads some row groups, cuts its entries
into one piece per block, and the pieces meet at their block's partition, where they
become CSR. An error in the data (an index out of range, a duplicate entry) stops the
job and comes back to the driver as the same ``InputError`` the driver's reader gives.
"""

from __future__ import annotations

import struct
from functools import partial

import numpy as np
from pyspark.serializers import FramedSerializer, pack_long

from .. import spark_internals
from ..errors import InputError, Span
from . import blocktasks as bt

_PIECE = struct.Struct("<4sqqq8s")  # magic, bi, bj, entries, dtype
_PIECE_MAGIC = b"JSC1"
_ERROR_TAG = "JAMPI-SPARSE-INPUT:"  # marks an input error raised in a task, to find it in Spark's error


def sparse_block(shape: tuple[int, int], slots: int) -> tuple[int, int]:
    """Row strips, two per task slot (so a slow task is not the whole stage)."""
    strips = max(1, min(shape[0], 2 * max(1, slots)))
    return -(-shape[0] // strips), shape[1]


# ---------------------------------------------------------------- pieces between partitions


def _piece_bytes(key, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> bytes:
    """Entries of block ``key`` (block-local int32 coordinates) as one raw byte string."""
    head = _PIECE.pack(_PIECE_MAGIC, key[0], key[1], values.size, values.dtype.str.encode())
    return b"".join((head, rows.astype(np.int32, copy=False).tobytes(), cols.astype(np.int32, copy=False).tobytes(),
                     values.tobytes()))


class PieceSerializer(FramedSerializer):
    """Reads :func:`_piece_bytes` elements: ``(key, rows, cols, values)``, views of the received bytes."""

    def dumps(self, obj):  # pieces are written by their tasks as bytes, never through this
        raise NotImplementedError("pieces are written as raw bytes")

    def loads(self, obj):
        magic, bi, bj, n, dt = _PIECE.unpack_from(obj)
        if magic != _PIECE_MAGIC:
            raise ValueError(f"corrupt sparse piece: {magic!r}")
        at = _PIECE.size
        rows = np.frombuffer(obj, np.int32, n, at)
        cols = np.frombuffer(obj, np.int32, n, at + 4 * n)
        values = np.frombuffer(obj, np.dtype(dt.rstrip(b"\0").decode()), n, at + 8 * n)
        return (bi, bj), rows, cols, values


def _input_error(err: InputError) -> RuntimeError:
    return RuntimeError(f"{_ERROR_TAG} {err.message}")


def raise_input_error(exc: BaseException, span: Span | None) -> None:
    """Re-raise a task's input error (found in Spark's error text) as an InputError on the driver."""
    text = str(exc)
    if _ERROR_TAG in text:
        message = text.split(_ERROR_TAG, 1)[1].strip().splitlines()[0]
        raise InputError(message, span) from None


PIECE_ENTRIES = 1 << 26  # entries per piece at most: 1 GiB of float64 values and two int32 indices


def _cut(shape, block, rows, cols, values):
    """``(partition, piece bytes)`` for the entries (global coordinates) of each block they fall in;
    a block's entries over PIECE_ENTRIES go in several pieces (Spark frames an element in 2 GiB)."""
    if not values.size:
        return
    grid_cols = bt.grid_of(shape, block)[1]
    part = (rows // block[0]) * grid_cols + cols // block[1]
    order = np.argsort(part, kind="stable")
    part, rows, cols, values = part[order], rows[order], cols[order], values[order]
    starts = np.flatnonzero(np.r_[True, part[1:] != part[:-1]])
    for s, e in zip(starts, np.r_[starts[1:], part.size], strict=True):
        key = divmod(int(part[s]), grid_cols)
        for lo in range(s, e, PIECE_ENTRIES):
            hi = min(e, lo + PIECE_ENTRIES)
            yield int(part[s]), _piece_bytes(key, rows[lo:hi] - key[0] * block[0], cols[lo:hi] - key[1] * block[1],
                                             values[lo:hi])


def _read_units(path, shape, block, dtype, units):
    """A task's row groups of coordinate Parquet, cut into pieces by block."""
    import pyarrow.parquet as pq

    from .formats import check_range, indices

    for file, group in units:
        try:
            table = pq.ParquetFile(file).read_row_group(group, columns=["i", "j", "v"])
            i, j = indices(table, "i", path, None), indices(table, "j", path, None)
            check_range(i, shape[0], "i", path, None)
            check_range(j, shape[1], "j", path, None)
            v = table.column("v").to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        except InputError as err:
            raise _input_error(err) from None
        for p, piece in _cut(shape, block, i.astype(np.int64), j.astype(np.int64), v):
            yield pack_long(p)
            yield piece


def _assemble(path, shape, block, dtype, split, pieces):
    """One partition's pieces become its CSR block (an empty one if no entry fell in it)."""
    from .sparse_io import coordinates_to_csr

    grid_cols = bt.grid_of(shape, block)[1]
    key = divmod(split, grid_cols)
    (r0, r1), (c0, c1) = bt.bounds(key, shape, block)
    got = list(pieces)
    rows = np.concatenate([p[1] for p in got]) if got else np.empty(0, np.int32)
    cols = np.concatenate([p[2] for p in got]) if got else np.empty(0, np.int32)
    values = np.concatenate([p[3] for p in got]).astype(dtype, copy=False) if got else np.empty(0, dtype)
    del got
    try:
        csr = coordinates_to_csr(rows, cols, values, (r1 - r0, c1 - c0), path, None)
    except InputError as err:
        if "duplicate entry at" in err.message:  # name the entry by its place in the whole matrix
            where = err.message.rsplit("(", 1)[1].rstrip(")").split(",")
            err = InputError(f"{path}: duplicate entry at ({int(where[0]) + r0}, {int(where[1]) + c0})", None)
        raise _input_error(err) from None
    yield key, csr


def coordinate_parquet_blocks(sc, path: str, shape: tuple[int, int], dtype: str, block: tuple[int, int],
                              span: Span | None):
    """The CSR blocks of coordinate Parquet (a file or a folder of parts), read by the tasks:
    an RDD of one ``(key, csr)`` per partition, in grid order."""
    import pyarrow.parquet as pq

    try:
        files = list(pq.ParquetDataset(path).files) or [path]
        units = [(f, g) for f in files for g in range(pq.ParquetFile(f).num_row_groups)]
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for unreadable parts
        raise InputError(f"cannot read {path}: {err}", span) from None
    grid = bt.grid_of(shape, block)
    nblocks = grid[0] * grid[1]
    tasks = sc.parallelize(units, max(1, min(len(units), sc.defaultParallelism * 2)))
    pieces = tasks.mapPartitions(partial(_read_units, path, shape, block, np.dtype(dtype)))
    moved = spark_internals.shuffle_bytes(pieces, nblocks, PieceSerializer())
    return moved.mapPartitionsWithIndex(partial(_assemble, path, shape, block, np.dtype(dtype)),
                                        preservesPartitioning=True)


def scipy_blocks(sc, csr, block: tuple[int, int]):
    """A driver-side CSR array's blocks as an RDD, block i in partition i, sent as raw frames."""
    from .blockframes import RawBlockSerializer

    blocks = []
    for key in np.ndindex(*bt.grid_of(csr.shape, block)):
        (r0, r1), (c0, c1) = bt.bounds(key, csr.shape, block)
        blocks.append((key, csr[r0:r1, c0:c1]))
    return spark_internals.parallelize_raw(sc, blocks, RawBlockSerializer(), len(blocks))


# ---------------------------------------------------------------- operations on CSR blocks


def _block_pieces(shape, block, new_block, transpose, items):
    """Each CSR block's entries, cut into pieces by the blocks of ``new_block`` (of the transpose,
    with ``transpose``)."""
    for key, b in items:
        (r0, _), (c0, _) = bt.bounds(key, shape, block)
        coo = b.tocoo()
        rows, cols = coo.row.astype(np.int64) + r0, coo.col.astype(np.int64) + c0
        if transpose:
            rows, cols, shape_out = cols, rows, shape[::-1]
        else:
            shape_out = shape
        for p, piece in _cut(shape_out, new_block, rows, cols, coo.data):
            yield pack_long(p)
            yield piece


def rechunked_blocks(matrix, new_block: tuple[int, int]):
    """The blocks of a sparse DistMatrix on another block shape: its entries moved (raw bytes)."""
    grid = bt.grid_of(matrix.shape, new_block)
    pieces = matrix.rdd.mapPartitions(partial(_block_pieces, matrix.shape, matrix.block, new_block, False))
    moved = spark_internals.shuffle_bytes(pieces, grid[0] * grid[1], PieceSerializer())
    return moved.mapPartitionsWithIndex(partial(_assemble, "a sparse matrix", matrix.shape, new_block,
                                                np.dtype(matrix.dtype)), preservesPartitioning=True)


def transposed_blocks(matrix):
    """The blocks of a sparse DistMatrix's transpose: each block's entries, swapped, moved (raw
    bytes) to their block of the transposed grid."""
    shape, block = matrix.shape[::-1], matrix.block[::-1]
    grid = bt.grid_of(shape, block)
    pieces = matrix.rdd.mapPartitions(partial(_block_pieces, matrix.shape, matrix.block, block, True))
    moved = spark_internals.shuffle_bytes(pieces, grid[0] * grid[1], PieceSerializer())
    return moved.mapPartitionsWithIndex(partial(_assemble, "a sparse matrix", shape, block, np.dtype(matrix.dtype)),
                                        preservesPartitioning=True)


def to_driver(matrix):
    """The whole matrix as one CSR array on the driver."""
    import scipy.sparse as sp

    grid = matrix.grid
    rows: list[list] = [[None] * grid[1] for _ in range(grid[0])]
    for (bi, bj), b in matrix.rdd.collect():
        rows[bi][bj] = b
    out = sp.block_array(rows, format="csr", dtype=matrix.dtype)
    if out.shape != matrix.shape:
        raise RuntimeError(f"collected a {out.shape} matrix, expected {matrix.shape}")
    return out
