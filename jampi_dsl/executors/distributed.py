"""A matrix as a grid of blocks in a Spark RDD.

Layout contract (shared with the Cannon executor): the RDD holds
``((bi, bj), ndarray)`` pairs, exactly one block per partition, partition
``bi * grid[1] + bj``. Blocks are C-contiguous and exact at the ragged edge
(never padded), and travel between the JVM and Python as raw frames
(:mod:`.blockframes`), never pickled. Two matrices with equal :attr:`DistMatrix.layout` are combined
partition by partition (a narrow zip, no shuffle).

Moving data: in local mode the executors share the driver's filesystem, so
large NumPy arrays go in and out through a memory-mapped file in ``/dev/shm``
rather than through Spark's collect/parallelize (measured at n=4096 float64,
128 MB in 4 blocks, local[4] on 2 busy cores: collect+assemble 1.1-1.3 s, the
shared file 0.6-0.8 s; parallelize 0.8-1.2 s, the shared file 0.75 s). The
file costs a Python task per block, while parallelize and a collect of cached
blocks run in the JVM alone, so small matrices take Spark's way.
"""

from __future__ import annotations

import math
import mmap
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from pyspark import StorageLevel
from pyspark.rdd import RDD, Partitioner

from .. import ops, spark_internals
from ..cluster import grid_side
from ..tempfiles import temp_name
from . import blocktasks as bt
from . import sparse_dist
from .blockframes import ELEMENTS_PER_BLOCK, RawBlockSerializer, RawPairDeserializer
from .holdings import hold
from .sources import BlockSource, NpySource

MIN_SPLIT = 256  # a dimension is not cut into blocks thinner than this: per-task overhead would dominate
MAX_BLOCK_BYTES = 256 * 2**20  # beyond this, more blocks; PySpark frames must stay under 2 GiB anyway
_FRAME_LIMIT = 2**31 - 2**20
SHARED_MIN_BYTES = 32 * 2**20  # below this, Python task overhead outweighs the faster shared file
# Above this, collect streams one block at a time: a plain collect holds several copies of
# every block in the driver JVM at once (it ran a 5 GiB heap out of memory at 8192², 512 MiB).
COLLECT_MAX_BYTES = 256 * 2**20
# On disk rather than dropped (and recomputed) under memory pressure. Deserialized: PySpark
# blocks are byte arrays already, and a serialized level copies each through Kryo on every
# write and read (JVM-side reads measured 2-5x faster this way).
_STORAGE = StorageLevel.MEMORY_AND_DISK_DESER


def choose_block(shape: tuple[int, int], slots: int, itemsize: int = 8) -> tuple[int, int]:
    """Default block shape: the q×q grid Cannon would use (q = floor(sqrt(slots))).

    Finer (2q, 4q, ...) only to keep a block under ``MAX_BLOCK_BYTES``; a
    dimension is never cut into pieces under ``MIN_SPLIT`` (skinny and small
    matrices get fewer blocks).
    """
    m, n = int(shape[0]), int(shape[1])
    g = grid_side(slots)
    while True:
        br = math.ceil(m / min(g, max(1, m // MIN_SPLIT)))
        bc = math.ceil(n / min(g, max(1, n // MIN_SPLIT)))
        if br * bc * itemsize <= MAX_BLOCK_BYTES or (br <= MIN_SPLIT and bc <= MIN_SPLIT):
            return br, bc
        g *= 2


def _context(spark):
    """Accept a SparkSession or a SparkContext."""
    return getattr(spark, "sparkContext", spark)


def _shares_files(sc) -> bool:
    """Executors see the driver's files: true in local mode (executors are threads of the driver JVM)."""
    return sc.master.startswith("local")


def _scratch_dir(sc, nbytes: int) -> str | None:
    """Where to pass ``nbytes`` between driver and executors as a file, or None to use Spark.

    RAM-backed /dev/shm first; it must have room, since a full tmpfs would SIGBUS the writer.
    """
    if nbytes < SHARED_MIN_BYTES or not _shares_files(sc):
        return None
    for d in ("/dev/shm", tempfile.gettempdir()):
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        if os.access(d, os.W_OK) and st.f_bavail * st.f_frsize > nbytes + 64 * 2**20:
            return d
    return None


def _create_npy(path: str, shape, dtype) -> int:
    """Create a full-size C-order ``.npy`` file (sparse until written); returns the data offset."""
    data = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    offset = data.offset
    del data
    return offset


def _jvm_classes(sc):
    """The JVM classes a BlockRDD needs, looked up once per gateway (each dotted lookup is a py4j call)."""
    cache = spark_internals.gateway_cache(sc)
    if "BlockRDD" not in cache:
        jvm = spark_internals.jvm(sc)
        cache.update({
            "BlockId": jvm.org.apache.spark.storage.BlockId,
            "RDDBlockId": jvm.org.apache.spark.storage.RDDBlockId,
            "BlockRDD": jvm.org.apache.spark.rdd.BlockRDD,
            "JavaRDD": jvm.org.apache.spark.api.java.JavaRDD,
            # Blocks of a PythonRDD hold byte arrays; with this class tag a remote fetch decodes
            # them with the serializer Spark stored them with (Kryo for Array[Byte]).
            "bytes": jvm.scala.reflect.ClassTag.apply(jvm.java.lang.Class.forName("[B")),
        })
    return cache


def block_rdd(sc, rdd_id: int, partitions, deserializer) -> RDD:
    """A Python RDD whose partition p reads the stored block ``(rdd_id, partitions[p])``.

    Spark's ``BlockRDD`` reads blocks straight from the block managers (remote
    fetch when needed) and carries no lineage, like a local checkpoint.
    """
    jvm = _jvm_classes(sc)
    partitions = list(partitions)
    ids = spark_internals.java_array(sc, jvm["BlockId"], len(partitions))
    for p, src in enumerate(partitions):
        ids[p] = jvm["RDDBlockId"](rdd_id, src)
    blocks = jvm["BlockRDD"](spark_internals.scala_context(sc), ids, jvm["bytes"])
    return RDD(jvm["JavaRDD"](blocks, jvm["bytes"]), sc, deserializer)


def _writes_raw(rdd) -> bool:
    """Whether ``rdd`` writes raw frames, after switching a pipelined RDD not yet built to them."""
    if isinstance(spark_internals.deserializer(rdd), RawBlockSerializer):
        return True
    if spark_internals.is_unbuilt_pipeline(rdd):
        spark_internals.set_deserializer(rdd, RawBlockSerializer())
        return True
    return False


def raw_blocks(rdd):
    """``rdd`` with its blocks written as raw frames (:mod:`.blockframes`), as every DistMatrix holds them.

    A pipelined RDD not yet built just changes its output serializer; any other
    gets one more narrow step (pipelined with nothing, so one pass over the blocks).
    """
    if _writes_raw(rdd):
        return rdd
    out = rdd.mapPartitions(bt.same_blocks, preservesPartitioning=True)
    spark_internals.set_deserializer(out, RawBlockSerializer())
    return out


def zip_block_rdds(a, b, panels: tuple = (None, None)) -> RDD:
    """Partition-wise pairs ``((key, block), (key, block))`` of two raw-frame block RDDs, zipped in the JVM.

    PySpark's ``RDD.zip`` would first re-serialize both sides (a Python pass
    over every block each); the JVM zip pairs frame with frame, which lines up
    because every block takes the same number of frames. ``panels``: see
    :class:`RawPairDeserializer`.
    """
    for rdd in (a, b):
        reader = spark_internals.deserializer(rdd)
        if not isinstance(reader, RawBlockSerializer):
            raise ValueError(f"zip_block_rdds needs raw-frame block RDDs, got {reader!r}")
    out = RDD(spark_internals.java_rdd(a).zip(spark_internals.java_rdd(b)), a.ctx, RawPairDeserializer(panels))
    out._jampi_keepalive = (a, b)  # keeps cached parents (and their blocks) alive
    return out


def _detach(rdd):
    """An ordinary RDD reading the cached blocks of ``rdd`` (a BlockRDD over its block ids).

    Every RDD computed in the same stage as a barrier RDD is itself a barrier
    RDD, and caching does not change that: later jobs would all run as
    barrier stages (all tasks at once, no partial jobs like ``take``, no
    retries, no dynamic allocation). A BlockRDD has no lineage, so it is not.
    ``localCheckpoint`` does not help: its RDD is read through the original.
    Returns ``rdd`` itself if Spark's internals do not allow this.
    """
    try:
        return block_rdd(rdd.ctx, rdd.id(), range(rdd.getNumPartitions()), spark_internals.deserializer(rdd))
    except Exception:  # py4j or a Spark version without these internals: stay a barrier RDD
        return rdd


@dataclass(eq=False)
class DistMatrix:
    """An m×n matrix as a grid of blocks in an RDD (see the module docstring for the layout)."""

    rdd: Any
    shape: tuple[int, int]
    block: tuple[int, int]
    dtype: np.dtype
    # Set while every block is exactly source.region(its bounds): transpose and rechunk then
    # make the new blocks from the source instead of shuffling these.
    source: BlockSource | None = None
    # The cached RDD whose blocks ``rdd`` reads (from_barrier_rdd); unpersist() releases it.
    base_rdd: Any = field(default=None, repr=False)
    # Every block is a SciPy CSR array (see .sparse_dist); else every block is a dense ndarray.
    sparse: bool = False

    def __post_init__(self):
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        self.dtype = np.dtype(self.dtype)
        if min(self.shape) < 1:
            raise ValueError(f"a distributed matrix needs at least 1×1 entries, got {self.shape}")
        self.block = _normalize_block(self.shape, self.block, None if self.sparse else self.dtype)
        self.rdd = raw_blocks(self.rdd)
        n = self.rdd.getNumPartitions()
        if n != self.nblocks:
            raise ValueError(f"RDD has {n} partitions, the {self.grid[0]}×{self.grid[1]} grid needs {self.nblocks}")
        self.rdd.partitioner = Partitioner(self.nblocks, bt.GridPartitioner(self.grid[1]))

    # -- layout -----------------------------------------------------------------------------

    @property
    def grid(self) -> tuple[int, int]:
        return bt.grid_of(self.shape, self.block)

    @property
    def nblocks(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    @property
    def layout(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return self.shape, self.block

    @property
    def is_cached(self) -> bool:
        """Blocks are kept by Spark: in this RDD's cache, or in the cache a detached RDD reads."""
        return bool(self.rdd.is_cached or (self.base_rdd is not None and self.base_rdd.is_cached))

    def _derive(self, rdd, dtype=None, *, shape=None, block=None, sparse=None) -> DistMatrix:
        return DistMatrix(rdd, shape or self.shape, block or self.block, self.dtype if dtype is None else dtype,
                          sparse=self.sparse if sparse is None else sparse)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_source(cls, spark, source: BlockSource, block: tuple[int, int]) -> DistMatrix:
        """Each task makes its own block with ``source.region``; no data passes through the driver."""
        sc = _context(spark)
        block = _normalize_block(source.shape, block, source.dtype)
        grid_rows, grid_cols = bt.grid_of(source.shape, block)
        nblocks = grid_rows * grid_cols
        # An empty parallelize has exactly nblocks partitions; split index i makes block divmod(i, grid_cols).
        rdd = sc.parallelize([], nblocks).mapPartitionsWithIndex(
            partial(bt.make_block, source, source.shape, block, grid_cols), preservesPartitioning=True
        )
        return cls(rdd, source.shape, block, source.dtype, source=source)

    @classmethod
    def from_numpy(cls, spark, array: np.ndarray, block: tuple[int, int]) -> DistMatrix:
        """Distribute a driver-side array; the result is cached on the executors."""
        sc = _context(spark)
        a = np.asarray(array)
        if a.ndim != 2:
            raise ValueError(f"expected a 2-D array, got {a.ndim}-D")
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
        scratch = _scratch_dir(sc, a.nbytes)
        if scratch is not None:
            path = os.path.join(scratch, f"jampi-in-{uuid.uuid4().hex}.npy")
            try:
                np.save(path, a)
                m = cls.from_source(sc, NpySource.open(path), block).materialize()
            finally:
                os.unlink(path)
            m.source = None  # the file is gone
            return m
        block = _normalize_block(a.shape, block, a.dtype)
        blocks = []
        for key in np.ndindex(*bt.grid_of(a.shape, block)):
            (r0, r1), (c0, c1) = bt.bounds(key, a.shape, block)
            blocks.append((key, np.ascontiguousarray(a[r0:r1, c0:c1])))
        # Raw frames straight to the JVM (no pickle); block i lands in partition i.
        rdd = spark_internals.parallelize_raw(sc, blocks, RawBlockSerializer(), len(blocks))
        return cls(rdd, a.shape, block, a.dtype).materialize()

    @classmethod
    def from_scipy(cls, spark, matrix, block: tuple[int, int]) -> DistMatrix:
        """Distribute a driver-side sparse matrix as CSR blocks, kept on the executors."""
        import scipy.sparse as sp

        csr = sp.csr_array(matrix)
        if csr.dtype not in (np.float32, np.float64):
            csr = csr.astype(np.float64)
        rdd = sparse_dist.scipy_blocks(_context(spark), csr, block)
        return cls(rdd, csr.shape, block, csr.dtype, sparse=True).checkpoint()

    @classmethod
    def from_coordinate_parquet(cls, spark, path: str, shape, dtype, block, span=None) -> DistMatrix:
        """Coordinate Parquet read by the tasks into CSR blocks (see .sparse_dist), read once and kept;
        bad data raises the driver reader's InputError."""
        rdd = sparse_dist.coordinate_parquet_blocks(_context(spark), path, shape, dtype, block, span)
        try:
            return cls(rdd, shape, block, dtype, sparse=True).checkpoint()
        except Exception as exc:  # noqa: BLE001 - py4j wraps the task's error
            sparse_dist.raise_input_error(exc, span)
            raise

    @classmethod
    def from_barrier_rdd(cls, rdd, shape, block, dtype) -> DistMatrix:
        """Wrap the result of ``rdd.barrier().mapPartitions(...)`` (one ``((bi, bj), block)`` per partition).

        Runs the barrier stage now (so a caller can retry it), caches its
        blocks, and returns a matrix whose later jobs are ordinary stages.
        """
        if not _writes_raw(rdd):
            raise ValueError("a barrier RDD already built must write its blocks with RawBlockSerializer")
        if not rdd.is_cached:
            rdd.persist(_STORAGE)
        hold(rdd)
        count = spark_internals.jvm_count(rdd) / ELEMENTS_PER_BLOCK  # the JVM counts frames
        expected = math.prod(bt.grid_of(shape, block))
        if count != expected:
            raise ValueError(f"barrier RDD yielded {count:g} blocks, the grid has {expected}")
        # A block of a memory-only cache may be evicted, and a BlockRDD cannot recompute it.
        detached = _detach(rdd) if rdd.getStorageLevel().useDisk else rdd
        return cls(detached, shape, block, dtype, base_rdd=rdd if detached is not rdd else None)

    # -- collecting and writing -----------------------------------------------------------

    def to_numpy(self) -> np.ndarray:
        if self.sparse:
            return self.to_driver().toarray()
        scratch = _scratch_dir(self.rdd.ctx, self.nbytes)
        return self._to_numpy_shared(scratch) if scratch else self._to_numpy_collect()

    def _to_numpy_collect(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=self.dtype)
        seen = 0
        # A barrier RDD allows no job over part of its partitions, which streaming needs.
        stream = self.nbytes > COLLECT_MAX_BYTES and not spark_internals.is_barrier(self.rdd)
        for key, b in self.rdd.toLocalIterator() if stream else self.rdd.collect():
            (r0, r1), (c0, c1) = bt.bounds(key, self.shape, self.block)
            out[r0:r1, c0:c1] = b
            seen += 1
        if seen != self.nblocks:
            raise RuntimeError(f"collected {seen} blocks, the grid has {self.nblocks}")
        return out

    def _to_numpy_shared(self, folder: str) -> np.ndarray:
        """Tasks write into a file the driver then maps: the result is backed by that (unlinked) mapping."""
        path = os.path.join(folder, f"jampi-out-{uuid.uuid4().hex}.npy")
        try:
            offset = self._write_npy(path)
            with open(path, "r+b") as f:
                mapped = mmap.mmap(f.fileno(), 0)
        finally:
            os.unlink(path)
        count = self.shape[0] * self.shape[1]
        return np.frombuffer(mapped, dtype=self.dtype, count=count, offset=offset).reshape(self.shape)

    def save_npy(self, path: str) -> None:
        """Write a ``.npy`` file, each task its own block, at a path the executors can reach.

        Atomic: written under a temporary name beside ``path`` and renamed at
        the end, so a failed run leaves no partial file.
        """
        path = os.path.abspath(path)
        tmp = temp_name(path)
        try:
            self._write_npy(tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _write_npy(self, path: str) -> int:
        offset = _create_npy(path, self.shape, self.dtype)
        task = partial(bt.write_blocks, path, offset, self.shape, self.block, self.dtype)
        written = sum(self.rdd.mapPartitions(task).collect())
        if written != self.nblocks:
            raise RuntimeError(f"wrote {written} blocks, the grid has {self.nblocks}")
        return offset

    # -- blockwise operations -------------------------------------------------------------

    def map_blocks(self, fn, dtype=None) -> DistMatrix:
        """``fn(block) -> block`` of the same shape on every block (narrow; pipelined by PySpark)."""
        return self._derive(self.rdd.mapPartitions(partial(bt.map_blocks, fn), preservesPartitioning=True), dtype)

    def zip_blocks(self, other: DistMatrix, fn, dtype=None) -> DistMatrix:
        """``fn(self block, other block)`` for two matrices of the same layout, partition by partition.

        Zipped in the JVM (:func:`zip_block_rdds`), with no shuffle.
        """
        if other.layout != self.layout:
            raise ValueError(f"zip_blocks needs equal layouts, got {self.layout} and {other.layout}")
        pairs = zip_block_rdds(self.rdd, other.rdd)
        # With a sparse side the planner sends only operations whose result stays sparse.
        return self._derive(pairs.mapPartitions(partial(bt.zip_blocks, fn), preservesPartitioning=True), dtype,
                            sparse=self.sparse or other.sparse)

    def elementwise(self, op: str, other: DistMatrix) -> DistMatrix:
        """``self op other`` for a binary operation of :mod:`jampi_dsl.ops`; dtypes promote as in NumPy."""
        if op not in ops.BINARY:
            raise ValueError(f"unknown elementwise operator {op!r}")
        if other.shape != self.shape:
            raise ValueError(f"elementwise {op} needs equal shapes, got {self.shape} and {other.shape}")
        fn = partial(bt.binary, op)
        dtype = np.result_type(self.dtype, other.dtype)
        # An operand that is still only a recipe is made inside the other's tasks: no zip, no JVM round trip.
        if other.source is not None and not other.is_cached:
            return self._with_source(fn, other.source, False, dtype)
        if self.source is not None and not self.is_cached:
            return other._with_source(fn, self.source, True, dtype)
        if other.layout != self.layout:
            other = other.rechunk(self.block)
        return self.zip_blocks(other, fn, dtype)

    def _with_source(self, fn, source: BlockSource, source_left: bool, dtype) -> DistMatrix:
        task = partial(bt.with_source, fn, source, source_left, self.shape, self.block)
        return self._derive(self.rdd.mapPartitions(task, preservesPartitioning=True), dtype)

    def with_vector(self, op: str, vector: np.ndarray, vector_on_left: bool = False) -> DistMatrix:
        """``self op vector`` (or the other way round) for a driver-side 1xc row, rx1 column or
        1x1 that broadcasts across this matrix: each task takes its stretch of it."""
        vector = np.ascontiguousarray(vector)
        dtype = np.result_type(self.dtype, vector.dtype)
        task = partial(bt.with_vector, op, vector, bool(vector_on_left), self.shape, self.block)
        return self._derive(self.rdd.mapPartitions(task, preservesPartitioning=True), dtype)

    def scalar(self, op: str, value: float, scalar_on_left: bool = False) -> DistMatrix:
        """``self op value`` (or ``value op self``); the dtype is kept, float32 stays float32."""
        if op not in ops.BINARY:
            raise ValueError(f"unknown scalar operator {op!r}")
        return self.map_blocks(partial(bt.scalar, op, float(value), bool(scalar_on_left)))

    def unary(self, fn: str) -> DistMatrix:
        """A unary operation of :mod:`jampi_dsl.ops` (``neg abs sqrt exp log tanh sign``), elementwise."""
        if fn not in ops.UNARY:
            raise ValueError(f"unknown elementwise function {fn!r}; expected one of {sorted(ops.UNARY)}")
        return self.map_blocks(partial(bt.unary, fn))

    def transpose(self) -> DistMatrix:
        """The transpose, with the transposed block shape.

        From the source when there is one (each task makes its transposed
        block directly); otherwise one shuffle: block (i, j) moves to
        partition j·grid[0]+i, which is not the same index, so no narrow
        dependency expresses it.
        """
        sc = self.rdd.ctx
        if self.sparse:
            return DistMatrix(sparse_dist.transposed_blocks(self), self.shape[::-1], self.block[::-1], self.dtype,
                              sparse=True)
        if self.source is not None:
            return DistMatrix.from_source(sc, self.source.transposed(), self.block[::-1])
        return self._regrid(self.shape[::-1], self.block[::-1], self.block[::-1], transpose=True)

    def rechunk(self, block: tuple[int, int]) -> DistMatrix:
        """The same matrix with another block shape (from the source, or one shuffle of block pieces)."""
        block = _normalize_block(self.shape, block, None if self.sparse else self.dtype)
        if block == self.block:
            return self
        if self.sparse:
            return self._derive(sparse_dist.rechunked_blocks(self, block), block=block)
        if self.source is not None:
            return DistMatrix.from_source(self.rdd.ctx, self.source, block)
        return self._regrid(self.shape, self.block, block, transpose=False)

    def _regrid(self, shape, old_block, new_block, *, transpose: bool) -> DistMatrix:
        grid = bt.grid_of(shape, new_block)
        pieces = self.rdd.mapPartitions(partial(bt.cut_block, shape, old_block, new_block, transpose))
        moved = pieces.partitionBy(grid[0] * grid[1], bt.GridPartitioner(grid[1]))
        rdd = moved.mapPartitions(partial(bt.assemble_block, shape, new_block, self.dtype), preservesPartitioning=True)
        return self._derive(rdd, shape=shape, block=new_block)

    # -- reductions -----------------------------------------------------------------------

    def _reduce(self, kind: str) -> float:
        parts = self.rdd.mapPartitions(partial(bt.reduce_block, kind, self.shape, self.block)).collect()
        return math.fsum(parts)

    def sum(self) -> float:
        return self._reduce("sum")

    def to_driver(self) -> np.ndarray:
        """The whole matrix on the driver: made there while it is still a recipe (no job), else
        collected."""
        if self.source is not None and not self.is_cached:
            return self.source.region((0, self.shape[0]), (0, self.shape[1]))
        if self.sparse:
            return sparse_dist.to_driver(self)  # one CSR array
        return self.to_numpy()

    def count_nonzero(self) -> float:
        return self._reduce("nnz")

    def extreme(self, kind: str) -> float:
        """The largest (``max``) or smallest (``min``) entry."""
        parts = self.rdd.mapPartitions(partial(bt.reduce_block, kind, self.shape, self.block)).collect()
        return float(max(parts) if kind == "max" else min(parts))

    def reduce_axis(self, kind: str, axis: int) -> np.ndarray:
        """``sum mean max min argmax argmin`` along ``axis``, as NumPy with ``keepdims``: the
        blocks' partial rows (or columns) are combined on the driver, in block order, so
        ties go to the first index as in NumPy."""
        length = self.shape[1] if axis == 0 else self.shape[0]
        parts = self.rdd.mapPartitions(partial(bt.reduce_axis_block, kind, axis, self.shape, self.block)).collect()
        parts.sort(key=lambda part: part[0])  # NumPy's first-index ties need the blocks in order
        shape = (1, length) if axis == 0 else (length, 1)
        values: np.ndarray | None = None
        index = np.zeros(shape, dtype=np.float64)
        out = np.zeros(shape, dtype=np.float64)
        seen = np.zeros(shape, dtype=bool)
        for offset, part, where in parts:
            window = (slice(None), slice(offset, offset + part.shape[1])) if axis == 0 else \
                (slice(offset, offset + part.shape[0]), slice(None))
            if kind in ("sum", "mean"):
                out[window] += part
                continue
            if values is None:
                values = np.zeros(shape, dtype=part.dtype)
            current, first = values[window], ~seen[window]
            better = first | ((part > current) if kind in ("max", "argmax") else (part < current))
            better |= np.isnan(part) & ~np.isnan(current)  # NumPy's max/argmax let nan win
            values[window] = np.where(better, part, current)
            if where is not None:
                index[window] = np.where(better, where, index[window])
            seen[window] = True
        if kind == "sum":
            return out.astype(self.dtype)
        if kind == "mean":
            return (out / (self.shape[0] if axis == 0 else self.shape[1])).astype(self.dtype)
        return index if kind.startswith("arg") else values

    def trace(self) -> float:
        """Sum of the main diagonal (of the leading square part, as ``np.trace`` for rectangles)."""
        return self._reduce("trace")

    def norm(self) -> float:
        """Frobenius norm."""
        return math.sqrt(self._reduce("sumsq"))

    # -- caching --------------------------------------------------------------------------

    def persist(self, level: StorageLevel = _STORAGE) -> DistMatrix:
        if not self.is_cached:
            hold(self.rdd.persist(level))
        return self

    def unpersist(self) -> DistMatrix:
        for rdd in (self.rdd, self.base_rdd):
            if rdd is not None and rdd.is_cached:
                rdd.unpersist()
        return self

    def materialize(self) -> DistMatrix:
        """Cache the blocks and compute them now (a JVM-side count: no block travels to Python)."""
        self.persist()
        spark_internals.jvm_count(self.rdd)
        return self

    def keep_in_file(self, folder: str) -> DistMatrix:
        """Computed once into a ``.npy`` file in ``folder`` (shared memory when it has room), which
        every later task maps: a loop that reads this matrix each iteration reads its blocks
        from the page cache, with no copy from the JVM to the Python workers. The file is
        released with the value (a holding); one left by a killed run is removed by the next."""
        from .. import tempfiles
        from .holdings import KeptFile

        tempfiles.remove_stale(folder)
        path = temp_name(os.path.join(folder, "kept.npy"))
        hold(KeptFile(path))
        self._write_npy(path)
        return DistMatrix.from_source(self.rdd.ctx, NpySource.open(path), self.block)

    def checkpoint(self) -> DistMatrix:
        """Computed once and kept (memory, then disk); later jobs read the kept blocks and never
        its lineage, so a late step cannot re-run early ones however long the plan is."""
        if self.is_cached:
            return self
        self.materialize()
        detached = _detach(self.rdd)
        if detached is self.rdd:
            return self
        return DistMatrix(detached, self.shape, self.block, self.dtype, base_rdd=self.rdd, sparse=self.sparse)


def _normalize_block(shape, block, dtype) -> tuple[int, int]:
    br, bc = int(block[0]), int(block[1])
    if br < 1 or bc < 1:
        raise ValueError(f"block shape must be positive, got {block}")
    br, bc = min(br, shape[0]), min(bc, shape[1])
    if dtype is not None and br * bc * np.dtype(dtype).itemsize > _FRAME_LIMIT:
        raise ValueError(f"a {br}×{bc} {np.dtype(dtype)} block exceeds PySpark's 2 GiB frame limit")
    return br, bc
