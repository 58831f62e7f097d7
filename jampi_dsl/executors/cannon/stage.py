"""Cannon's matrix product as one Spark barrier stage: the driver side.

``cannon_matmul`` plans the grid and the inputs (see :mod:`.feed`), runs the
barrier stage (see :mod:`.task`), and retries it itself when it fails, since
Spark aborts a failed barrier *result* stage instead of retrying it. Every
attempt gets a fresh secret and stage id, so links of a dead attempt can never
authenticate to a new one. Tasks find their peers through a small service on
the driver (:mod:`.rendezvous`); if the executors cannot reach it, the next
attempt uses Spark's ``allGather`` (a second slower: it answers on a tick).

The result stays distributed: task t's C block is partition t, cached by Spark
(memory, then disk) and exposed through a ``BlockRDD`` over those cached
blocks. That RDD is not a barrier RDD, so ordinary jobs (take, first,
coalesce, zip, ...) work on it, and it is already in the q×q grid layout, so
a following product reads it in skewed order without a shuffle or exchange.
With ``output_npy`` the tasks write C into a file instead, and nothing is cached.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
import uuid
from functools import partial
from typing import Any

import numpy as np
from py4j.protocol import Py4JError
from pyspark import StorageLevel

from ... import spark_internals
from ...errors import ExecutionError, ShapeError
from ...tempfiles import temp_name
from ..blockframes import RawBlockSerializer
from ..distributed import DistMatrix
from .channel import Credentials
from .feed import is_distributed, is_source, plan_feed
from .layout import CannonConfig, Geometry, choose_grid, default_q
from .rendezvous import Rendezvous
from .rounds import column_panel_layouts
from .task import TaskSpec, run_task
from .util import ERROR_TAG
from .watchdog import StageWatchdog


class _ListParam:
    """Accumulator of per-task stat dicts (duck-typed AccumulatorParam)."""

    def zero(self, value):
        return []

    def addInPlace(self, a, b):  # noqa: N802 - PySpark's name
        a.extend(b)
        return a


_LOCAL_SLOTS: dict[str, int] = {}  # applicationId -> slots of a local master (fixed for its life)


def _slots(spark) -> int:
    from ...cluster import task_slots

    sc = spark.sparkContext
    if not sc.master.startswith("local"):
        return int(task_slots(spark))
    app = sc.applicationId
    if app not in _LOCAL_SLOTS:
        _LOCAL_SLOTS[app] = int(task_slots(spark))
    return _LOCAL_SLOTS[app]


def _task_cpus(spark) -> int:
    return int(spark_internals.conf_get(spark.sparkContext, "spark.task.cpus", "1"))


def _free_slots_wait(sc, need: int, timeout: float) -> None:
    """After a failed attempt, wait (bounded) until ``need`` task slots are back.

    On a cluster a failed barrier stage can take executors down with it (Spark
    kills the tasks waiting in ``allGather``, and an executor may exit on
    that); a barrier stage submitted before they return waits for slots in
    Spark's own slow retry loop instead (40 checks 15 s apart). When they do not
    come back within ``timeout`` (a worker lost for good), the product fails now,
    saying how many slots the grid needs and how many are left.
    """
    if sc.master.startswith("local"):
        return
    deadline = time.monotonic() + timeout
    have = None
    while time.monotonic() < deadline:
        try:
            have = spark_internals.max_concurrent_tasks(sc)
        except Exception:  # noqa: BLE001 - internal API unavailable: just try the stage
            return
        if have >= need:
            return
        time.sleep(0.5)
    if have is not None:
        raise ExecutionError(
            f"the Cannon grid needs {need} task slots at once, the cluster now has {have} "
            f"(still after {timeout:g}s): an executor was lost; rerun when it is back, or with "
            "--executor mllib or broadcast"
        )


def _operand_info(x: Any, name: str) -> tuple[tuple[int, int], np.dtype]:
    if not (is_distributed(x) or is_source(x)):
        raise TypeError(
            f"operand {name} must be a DistMatrix or a BlockSource, not {type(x).__name__}"
        )
    return (int(x.shape[0]), int(x.shape[1])), np.dtype(x.dtype)


def _failure_reason(exc: BaseException) -> str:
    """The most telling line of a failed barrier job: our own task error if any, else Spark's."""
    text = str(exc)
    ours = [line.split(ERROR_TAG, 1)[1].strip() for line in text.splitlines() if ERROR_TAG in line]
    if ours:
        return ours[-1]
    m = re.search(r"barrier task ResultTask\((\d+), (\d+)\)", text)
    crashed = "Python worker exited unexpectedly" in text or "crashed" in text
    if m:
        return f"task {m.group(2)} failed" + (
            " (its Python worker exited unexpectedly)" if crashed else ""
        )
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("An error occurred", "at ", "Traceback")):
            return line[:500]
    return type(exc).__name__


def _notice(config: CannonConfig, text: str) -> None:
    """One line for the user (a retry and why): the run's notice hook, else stderr."""
    if config.notify is not None:
        config.notify(text)
    else:
        print(text, file=sys.stderr, flush=True)


def _start_rendezvous(sc, creds: Credentials, tasks: int, config: CannonConfig) -> Rendezvous | None:
    """The driver's peer-discovery service for one attempt, on the address executors reach the driver at."""
    host = spark_internals.conf_get(sc, "spark.driver.host", "127.0.0.1")
    try:
        return Rendezvous(spark_internals.conf_get(sc, "spark.driver.bindAddress", host), host, creds, tasks,
                          config.handshake_timeout).start()
    except OSError:
        return None  # cannot listen here: the tasks use Spark's allGather


def _new_npy(path: str, shape: tuple[int, int], dtype: np.dtype) -> str:
    final = os.path.abspath(path)
    tmp = temp_name(final)
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    del mm
    return tmp


def cannon_matmul(
    spark,
    a: Any,
    b: Any,
    *,
    trans_a: bool = False,
    trans_b: bool = False,
    grid: int | tuple[int, int] | None = None,
    config: CannonConfig | None = None,
    output_npy: str | None = None,
    alpha: float = 1.0,
    beta: float = 0.0,
    addend: Any = None,
):
    """``op(a) @ op(b)`` with Cannon's algorithm in one barrier stage (op = transpose when asked).

    ``a`` and ``b`` are DistMatrix or BlockSource values. With ``alpha``, ``beta``
    and ``addend`` (a BlockSource of the result's shape and dtype) each task
    finishes its block as GEMM does, ``alpha * product + beta * addend``, with
    the rounding of jampi's blockwise operations (scale, then add). Returns a DistMatrix in
    the q×q grid layout (block ceil(m/q) × ceil(n/q)), or ``None`` when
    ``output_npy`` is given: then each task writes its block straight into that
    file (which must be reachable from every executor), created atomically.
    Raises ShapeError on mismatched shapes and ExecutionError when the stage
    still fails after ``config.retries`` retries.
    """
    config = config or CannonConfig()
    sc = spark.sparkContext
    (ar, ac), a_dtype = _operand_info(a, "A")
    (br, bc), b_dtype = _operand_info(b, "B")
    m, k = (ac, ar) if trans_a else (ar, ac)
    k2, n = (bc, br) if trans_b else (br, bc)
    if k != k2:
        raise ShapeError(f"matrix product needs matching inner dimensions: {m}x{k} @ {k2}x{n}")
    if min(m, k, n) < 1:
        raise ShapeError(f"matrix product of empty matrices {m}x{k} @ {k2}x{n}")
    dtype = np.result_type(a_dtype, b_dtype)
    if dtype not in (np.float32, np.float64):
        raise ShapeError(f"Cannon products are float32 or float64, not {dtype}")
    if beta != 0.0 and addend is not None:
        if not is_source(addend) or tuple(addend.shape) != (m, n) or np.dtype(addend.dtype) != dtype:
            raise ShapeError(f"the addend of a Cannon GEMM must be a {m}x{n} {dtype} BlockSource")
    else:
        addend = None
    if spark_internals.conf_get(sc, "spark.dynamicAllocation.enabled", "false").lower() == "true":
        raise ExecutionError(
            "Cannon runs as a barrier stage, which Spark refuses under dynamic allocation"
        )
    if isinstance(grid, tuple):
        if grid[0] != grid[1]:
            raise ValueError(f"Cannon needs a square grid, not {grid}")
        grid = grid[0]
    slots = _slots(spark)
    q = choose_grid(m, n, int(grid) if grid else default_q(slots))
    if q * q > slots:
        raise ExecutionError(
            f"a {q}x{q} Cannon grid needs {q * q} task slots at once; the cluster has {slots}"
        )
    geo = Geometry.make(q, m, k, n, trans_a, trans_b, dtype)
    feed = plan_feed(sc, geo, a, b, config.skew, column_panel_layouts(geo, config.panels))
    stats_acc = sc.accumulator([], _ListParam()) if config.stats is not None else None
    npy_tmp = _new_npy(output_npy, (m, n), dtype) if output_npy else None
    stage_id = uuid.uuid4().hex[:16]
    failures: list[str] = []
    discovery, rendezvous = config.discovery, None
    try:
        for attempt in range(config.retries + 1):
            if attempt:
                _free_slots_wait(sc, q * q, config.timeout)
            creds = Credentials(secrets.token_bytes(32), f"{stage_id}.{attempt}", attempt)
            rendezvous = _start_rendezvous(sc, creds, q * q, config) if discovery == "driver" and q > 1 else None
            spec = TaskSpec(
                geo=geo,
                a=feed.a,
                b=feed.b,
                stream=feed.stream,
                secret=creds.secret,
                stage=creds.stage,
                attempt=attempt,
                timeout=config.timeout,
                handshake_timeout=config.handshake_timeout,
                blas_threads=config.blas_threads or _task_cpus(spark),
                fault=config.fail_task,
                announce_dir=config.announce_dir,
                connect_delay=config.connect_delay,
                npy_path=npy_tmp,
                stats=stats_acc,
                alpha=float(alpha),
                beta=float(beta),
                addend=addend,
                rendezvous=rendezvous.address if rendezvous is not None else None,
                panels=config.panels,
            )
            base = feed.rdd if feed.rdd is not None else sc.parallelize(range(q * q), q * q)
            stage = base.barrier().mapPartitions(partial(run_task, spec))
            if npy_tmp is None:
                spark_internals.set_deserializer(stage, RawBlockSerializer())
                # Deserialized: the JVM keeps the blocks as written, no copy when read.
                stage.persist(StorageLevel.MEMORY_AND_DISK_DESER)
            group = f"jampi-cannon-{stage_id}-{attempt}"
            sc.setJobGroup(group, f"jampi Cannon {m}x{k} @ {k}x{n} on a {q}x{q} grid, attempt {attempt}",
                           interruptOnCancel=True)
            t0, submitted = time.perf_counter(), time.time()
            watchdog = StageWatchdog(sc, group, q * q, config.timeout)
            try:
                with watchdog:
                    if npy_tmp is None:
                        # Runs the stage with a JVM-side count (C never passes through Python again),
                        # then wraps the cached blocks in an ordinary (non-barrier) RDD.
                        result = DistMatrix.from_barrier_rdd(stage, (m, n), (geo.bm, geo.bn), dtype)
                    else:
                        spark_internals.jvm_count(stage)
            except Py4JError as exc:
                if npy_tmp is None:
                    stage.unpersist(blocking=False)
                reason = watchdog.reason or _failure_reason(exc)
                failures.append(f"attempt {attempt}: {reason}")
                if "No space left on device" in str(exc):
                    raise ExecutionError(f"Cannon product {m}x{k} @ {k}x{n}: disk full (No space left on "
                                         "device); not retried") from None
                if attempt < config.retries:
                    _notice(config, f"Cannon stage retried ({attempt + 1}/{config.retries}): {reason}")
                if "rendezvous with the driver" in reason:
                    discovery = "spark"  # the executors cannot reach the driver: Spark's allGather then
                continue
            finally:
                sc.setLocalProperty("spark.jobGroup.id", None)
                sc.setJobDescription(None)
                if rendezvous is not None:
                    rendezvous.close()
                    rendezvous = None
            if stats_acc is not None:
                for row in stats_acc.value:
                    if row.get("attempt") == attempt:
                        config.stats.append(dict(row, stage_seconds=time.perf_counter() - t0,
                                                 submitted_at=submitted, finished_at=time.time()))
            if npy_tmp is not None:
                os.replace(npy_tmp, os.path.abspath(output_npy))
                npy_tmp = None
                return None
            return result
    finally:
        if rendezvous is not None:
            rendezvous.close()
        if npy_tmp is not None and os.path.exists(npy_tmp):
            os.unlink(npy_tmp)
    raise ExecutionError(
        f"Cannon product {m}x{k} @ {k}x{n} ({q}x{q} grid) failed {len(failures)} times: "
        + "; ".join(failures)
    )
