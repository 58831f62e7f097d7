"""MLlib ``BlockMatrix.multiply``: the fallback when a barrier stage is impossible
(dynamic allocation, too few slots) or when asked for.

PySpark's own NumPy → BlockMatrix path turns every block into a Python list of
floats for a DataFrame (BACKGROUND.md: 132 s for two 2048² matrices). Here each
block crosses to the driver JVM as raw little-endian bytes through a file in
RAM-backed scratch space, becomes a ``double[]`` by a JVM-side ``ByteBuffer``
view, and the JVM builds the ``BlockMatrix`` itself. The product comes back
the same way. The driver JVM and this process are always on one machine (py4j
talks over loopback), so the scratch file is always reachable.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from typing import Any

import numpy as np

from .. import spark_internals
from ..planner import ir
from .base import Executor, RunContext, handles
from .spark import to_local


def _scratch() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _channel(sc, path: str, *options: str):
    """A JVM ``FileChannel`` on ``path`` (options: StandardOpenOption names)."""
    jvm = spark_internals.jvm(sc)
    opened = spark_internals.java_array(sc, jvm.java.nio.file.OpenOption, len(options))
    for i, name in enumerate(options):
        opened[i] = getattr(jvm.java.nio.file.StandardOpenOption, name)
    nio_path = jvm.java.nio.file.Paths.get(path, spark_internals.java_array(sc, jvm.String, 0))
    return jvm.java.nio.channels.FileChannel.open(nio_path, opened)


def _jvm_doubles(sc, block: np.ndarray):
    """A JVM ``double[]`` holding ``block`` in row-major order.

    The bytes go file → JVM buffer through a ``FileChannel``: never as a py4j return value
    (py4j turns a ``byte[]`` into Python bytes, Base64 both ways, and at n=8192 that
    copy exhausted the driver's heap)."""
    jvm = spark_internals.jvm(sc)
    path = os.path.join(_scratch(), f"jampi-mllib-{uuid.uuid4().hex}.bin")
    size = block.size * 8
    buffer = jvm.java.nio.ByteBuffer.allocate(size)
    try:
        np.ascontiguousarray(block, dtype="<f8").tofile(path)
        channel = _channel(sc, path, "READ")
        try:
            while buffer.hasRemaining() and channel.read(buffer) >= 0:
                pass
        finally:
            channel.close()
    finally:
        os.unlink(path)
    if buffer.position() != size:
        raise OSError(f"{path}: read {buffer.position()} of {size} bytes")
    buffer.flip()
    values = spark_internals.java_array(sc, jvm.double, block.size)
    buffer.order(jvm.java.nio.ByteOrder.LITTLE_ENDIAN).asDoubleBuffer().get(values)
    return values


def to_block_matrix(spark, array: np.ndarray, block: int):
    """A cached JVM ``BlockMatrix`` of ``array`` with square ``block``-sized blocks (MLlib is float64 only)."""
    sc = spark.sparkContext
    jvm = spark_internals.jvm(sc)
    rows, cols = array.shape
    grid_r, grid_c = -(-rows // block), -(-cols // block)
    items = jvm.java.util.ArrayList()
    for i in range(grid_r):
        for j in range(grid_c):
            part = array[i * block : (i + 1) * block, j * block : (j + 1) * block]
            # Row-major values are MLlib's column-major layout with isTransposed=true.
            matrix = jvm.org.apache.spark.mllib.linalg.DenseMatrix(
                part.shape[0], part.shape[1], _jvm_doubles(sc, part), True
            )
            items.add(jvm.scala.Tuple2(jvm.scala.Tuple2(i, j), matrix))
    rdd = spark_internals.java_context(sc).parallelize(items, grid_r * grid_c).rdd()
    matrix = jvm.org.apache.spark.mllib.linalg.distributed.BlockMatrix(rdd, block, block, rows, cols)
    matrix.blocks().persist(jvm.org.apache.spark.storage.StorageLevel.MEMORY_AND_DISK())
    matrix.blocks().count()
    return matrix


def from_block_matrix(spark, matrix) -> np.ndarray:
    """Collect a JVM ``BlockMatrix`` into a NumPy array, each block as raw bytes."""
    sc = spark.sparkContext
    jvm = spark_internals.jvm(sc)
    rows, cols = int(matrix.numRows()), int(matrix.numCols())
    rpb, cpb = int(matrix.rowsPerBlock()), int(matrix.colsPerBlock())
    out = np.zeros((rows, cols))
    for entry in matrix.blocks().collect():  # a Java array of ((i, j), Matrix) tuples
        i, j = int(entry._1()._1()), int(entry._1()._2())
        block = entry._2()
        n_r, n_c = int(block.numRows()), int(block.numCols())
        path = os.path.join(_scratch(), f"jampi-mllib-{uuid.uuid4().hex}.bin")
        buffer = jvm.java.nio.ByteBuffer.allocate(n_r * n_c * 8).order(jvm.java.nio.ByteOrder.LITTLE_ENDIAN)
        buffer.asDoubleBuffer().put(block.toArray())  # column-major, whatever the block's layout
        try:
            channel = _channel(sc, path, "WRITE", "CREATE", "TRUNCATE_EXISTING")
            try:  # JVM buffer → file, never through py4j (see _jvm_doubles)
                while buffer.hasRemaining():
                    channel.write(buffer)
            finally:
                channel.close()
            values = np.fromfile(path, dtype="<f8")
        finally:
            if os.path.exists(path):
                os.unlink(path)
        out[i * rpb : i * rpb + n_r, j * cpb : j * cpb + n_c] = values.reshape(n_c, n_r).T
    return out


def choose_mllib_block(m: int, k: int, n: int) -> int:
    # A quarter of the largest dimension: among n/8, n/4 and n/2 the best varies with the BLAS
    # (BACKGROUND.md); a quarter is never the worst and keeps per-task strips moderate.
    return max(64, math.ceil(max(m, k, n) / 4))


class MllibExecutor(Executor):
    name = "mllib"
    placement = "distributed"

    def _product(self, node: ir.MatMul | ir.Gemm, a: Any, b: Any, ctx: RunContext) -> np.ndarray:
        spark = ctx.get_spark()
        left = to_local(a)
        right = to_local(b)
        left = left.T if node.trans_a else left
        right = right.T if node.trans_b else right
        block = choose_mllib_block(left.shape[0], left.shape[1], right.shape[1])
        before = spark_internals.persistent_rdd_ids(spark.sparkContext)
        try:
            ja, jb = to_block_matrix(spark, left, block), to_block_matrix(spark, right, block)
            result = from_block_matrix(spark, ja.multiply(jb))
        finally:
            # Our operands' blocks, and what BlockMatrix caches for itself (its blockInfo) and
            # never releases: everything this product persisted.
            spark_internals.unpersist_rdds_since(spark.sparkContext, before)
        return result.astype(node.type.dtype, copy=False)

    @handles(ir.MatMul)
    def matmul(self, node: ir.MatMul, inputs, ctx: RunContext):
        return self._product(node, inputs[0], inputs[1], ctx)

    @handles(ir.Gemm)
    def gemm(self, node: ir.Gemm, inputs, ctx: RunContext):
        out = self._product(node, inputs[0], inputs[1], ctx)
        if node.alpha != 1.0:
            out = node.alpha * out
        if node.beta != 0.0:
            c = to_local(inputs[2])
            out = out + (c if node.beta == 1.0 else node.beta * c)
        return out.astype(node.type.dtype, copy=False)
