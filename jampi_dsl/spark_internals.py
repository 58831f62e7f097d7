"""Every PySpark internal jampi relies on, in one place.

PySpark exposes no public API for what jampi needs from the JVM side: counting
or zipping RDDs in the JVM (blocks never pass through Python), choosing the
serializer an RDD's Python side decodes with, reading stored blocks through a
``BlockRDD``, asking the scheduler how many barrier tasks fit, and launching
the driver JVM with its stderr redirected. Each function here wraps one such
private attribute or internal (``sc._jsc``, ``sc._jvm``, ``rdd._jrdd``, py4j
handles, ...), so that a PySpark upgrade that moves one breaks this module
only; no other module of jampi touches them.

Importing this module imports nothing from PySpark: Spark tasks and the local
executors import jampi modules that use it, and pay for PySpark only when a
function here actually needs it.
"""

from __future__ import annotations

from typing import Any

# -------------------------------------------------------------- the context and its JVM


def active_context() -> Any:
    """The SparkContext of this process, or None (``SparkContext._active_spark_context``): ``getOrCreate`` would start one."""
    from pyspark import SparkContext

    return SparkContext._active_spark_context


def gateway(sc: Any = None) -> Any:
    """The py4j gateway to the driver JVM (``SparkContext._gateway``), None until launched: is a JVM up; where JVM class handles are cached."""
    if sc is not None:
        return sc._gateway
    from pyspark import SparkContext

    return SparkContext._gateway


def jvm(sc: Any = None) -> Any:
    """The py4j view of the driver JVM (``SparkContext._jvm``): JVM classes jampi uses that PySpark has no Python API for."""
    if sc is not None:
        return sc._jvm
    from pyspark import SparkContext

    return SparkContext._jvm


def gateway_cache(sc: Any) -> dict:
    """A dict kept on ``sc._gateway`` (read through ``vars``: a py4j gateway answers any name): JVM class handles, looked up once per JVM."""
    gw = sc._gateway
    cache = vars(gw).get("_jampi_cache")
    if cache is None:
        cache = gw._jampi_cache = {}
    return cache


def java_array(sc: Any, java_class: Any, length: int) -> Any:
    """A new Java array (``sc._gateway.new_array``): the BlockId[], double[] and option arguments of those JVM calls."""
    return sc._gateway.new_array(java_class, length)


def java_context(sc: Any) -> Any:
    """The JavaSparkContext behind ``sc`` (``sc._jsc``): MLlib's BlockMatrix is built from a JVM-side ``parallelize``."""
    return sc._jsc


def scala_context(sc: Any) -> Any:
    """The JVM's own SparkContext (``sc._jsc.sc()``): ``BlockRDD``'s constructor takes it."""
    return sc._jsc.sc()


def conf_get(sc: Any, key: str, default: str) -> str:
    """One setting of ``sc``'s configuration (``sc._conf``): ``sc.getConf()`` copies every entry over py4j (~40 ms)."""
    return sc._conf.get(key, default)


def max_concurrent_tasks(sc: Any) -> int:
    """Task slots as the barrier scheduler counts them (``sc._jsc.sc().maxNumConcurrentTasks``); raises if the API moved."""
    jsc = scala_context(sc)
    return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))


def rdd_storage_info(sc: Any) -> Any:
    """Spark's ``RDDInfo`` of every cached RDD (``sc._jsc.sc().getRDDStorageInfo()``): are all of an RDD's blocks stored."""
    return scala_context(sc).getRDDStorageInfo()


def persistent_rdd_ids(sc: Any) -> set:
    """JVM ids of every persisted RDD (``sc._jsc.getPersistentRDDs()``): finds what MLlib persisted for itself."""
    return set(java_context(sc).getPersistentRDDs().keySet())


def unpersist_rdds_since(sc: Any, before: set) -> None:
    """Unpersist JVM RDDs persisted since the ``before`` ids (``sc._jsc.getPersistentRDDs()``): MLlib never releases its own."""
    cached = java_context(sc).getPersistentRDDs()
    for rdd_id in set(cached.keySet()) - before:
        cached.get(rdd_id).unpersist(False)


def accumulator_server(sc: Any) -> Any:
    """``sc``'s accumulator update server, or None (``sc._accumulatorServer``): at exit it must take the JVM hanging up quietly."""
    return getattr(sc, "_accumulatorServer", None)


def launch_gateway(conf: Any, stderr: int) -> Any:
    """Launch the driver JVM as PySpark does (``pyspark.java_gateway.launch_gateway``) with its stderr on fd ``stderr``, which jampi filters."""
    from pyspark.java_gateway import launch_gateway as launch

    return launch(conf, popen_kwargs={"stderr": stderr})


def gateway_process(gw: Any) -> Any:
    """The JVM process of a :func:`launch_gateway` gateway (``gateway.proc``, set by PySpark): ended and waited for at exit."""
    return gw.proc


# -------------------------------------------------------------- an RDD's JVM side


def java_rdd(rdd: Any) -> Any:
    """The JavaRDD behind a Python RDD (``rdd._jrdd``): block RDDs are zipped in the JVM, frame with frame, not through Python."""
    return rdd._jrdd


def jvm_rdd_id(rdd: Any) -> int:
    """The JVM id of ``rdd`` (``rdd._jrdd.rdd().id()``): the id its stored blocks are kept under."""
    return rdd._jrdd.rdd().id()


def jvm_count(rdd: Any) -> int:
    """Run ``rdd``'s job as a JVM-side count of its elements (``rdd._jrdd.count()``): no block passes through Python."""
    return rdd._jrdd.count()


def is_barrier(rdd: Any) -> bool:
    """Whether ``rdd`` is computed in a barrier stage (``rdd._jrdd.rdd().isBarrier()``): then no job may read part of it."""
    return rdd._jrdd.rdd().isBarrier()


def deserializer(rdd: Any) -> Any:
    """What ``rdd``'s Python side decodes its elements with (``rdd._jrdd_deserializer``): raw block frames or pickles."""
    return rdd._jrdd_deserializer


def set_deserializer(rdd: Any, serializer: Any) -> None:
    """Make ``rdd``'s elements raw frames, not pickles (``rdd._jrdd_deserializer``; a pipelined RDD: before its JavaRDD is built)."""
    rdd._jrdd_deserializer = serializer


def is_unbuilt_pipeline(rdd: Any) -> bool:
    """Whether ``rdd`` is a PipelinedRDD whose JavaRDD is not built yet (``rdd._jrdd_val``): its serializer may still change."""
    from pyspark.rdd import PipelinedRDD

    return isinstance(rdd, PipelinedRDD) and rdd._jrdd_val is None


def shuffle_bytes(rdd: Any, partitions: int, deserializer: Any) -> Any:
    """Move raw byte elements to partitions chosen by the tasks, never through pickle.

    ``rdd``'s tasks yield pairs of elements: ``pyspark.serializers.pack_long(p)``
    then the bytes for partition ``p``. This is the JVM half of PySpark's own
    ``partitionBy`` (``PairwiseRDD`` → ``PythonPartitioner`` → ``valueOfPair``)
    without its pickled batches; the receiving side reads the bytes with
    ``deserializer`` (a ``FramedSerializer``).
    """
    from pyspark.rdd import RDD

    rdd._bypass_serializer = True  # the yielded bytes go to the JVM as they are
    jvm_ = rdd.ctx._jvm
    pairs = jvm_.PairwiseRDD(rdd._jrdd.rdd()).asJavaPairRDD()
    # PythonPartitioner sends a long key to that partition; its second argument only tells
    # partitioners apart, and this one is never compared with another.
    moved = pairs.partitionBy(jvm_.PythonPartitioner(partitions, 0))
    return RDD(jvm_.PythonRDD.valueOfPair(moved), rdd.ctx, deserializer)


def parallelize_raw(sc: Any, blocks: list, serializer: Any, partitions: int) -> Any:
    """An RDD of ``blocks`` written by ``serializer`` straight to the JVM, never pickled.

    PySpark's own ``parallelize`` pickles its elements in batches; this is its JVM half
    (``_serialize_to_jvm`` → ``PythonRDD.readRDDFromFile``, or the parallelize server when
    I/O encryption is on) with our frames instead. The JVM cuts the frames it reads into
    ``partitions`` equal runs, so a serializer writing the same number of frames per block
    puts block i in partition i.
    """
    from pyspark.rdd import RDD

    def read(path: str) -> Any:
        return sc._jvm.PythonRDD.readRDDFromFile(sc._jsc, path, partitions)

    def serve() -> Any:
        return sc._jvm.PythonParallelizeServer(sc._jsc.sc(), partitions)

    return RDD(sc._serialize_to_jvm(blocks, serializer, read, serve), sc, serializer)
