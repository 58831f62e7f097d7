"""The in-memory systems, each measured on the same A and B in the benchmark's own process.

- ``numpy``: ``A @ B``, all cores; its result is the reference every other system is checked against.
- ``jampi-<method>``: a whole jampi run (plan + execute + collect the product to NumPy) of
  ``random(n, n, seed=1) @ random(n, n, seed=2)``, the method forced, or chosen (``auto``).
- ``cannon-stage``: the Cannon barrier stage alone on cached distributed blocks (what a chained
  product consumes), with per-task stats: the compute / communication / overhead split, the
  kernel's peak RSS of each task, and the bytes its peer links carried.
- ``mllib-java``: MLlib ``BlockMatrix.multiply`` on blocks cached in the JVM, warm, one block size
  per record (the JVM's BLAS is whatever it was started with; the record says which it used).
- ``dask``: ``dask.array`` matmul with the threaded scheduler, chunks of n/2.

MLlib with the *other* BLAS runs in a child process (``run_child``; this module is its entry
point). netlib (``dev.ludovic.netlib``) picks its BLAS once, when the JVM first loads it: native
when it can ``dlopen`` the library (``libblas.so.3``, or the path in the system property
``dev.ludovic.netlib.blas.nativeLibPath``), else Java (``VectorBLAS``). A system property must be
on the JVM's command line, so a second BLAS needs a second JVM; the parent passes the same
inputs as ``.npy`` files and the plan (block sizes, repeats), and reads the records back as JSON::

    python -m benchmarks.systems --blas native --a A.npy --b B.npy --want C.npy \
        --plan '[{"block": 512, "reps": 2, "warmup": true}]' --out records.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .common import MiB, Record, TreeRss, child_env, median, mllib_blas, shuffle_read_total, timed


@dataclass
class Case:
    """One (n, dtype) of the run: the inputs, the reference, and how often to repeat."""

    spark: Any
    n: int
    dtype: str
    a: np.ndarray
    b: np.ndarray
    want: np.ndarray | None = None
    reps: int = 3
    warmup: bool = True
    extra: dict = field(default_factory=dict)


def _finish(rec: Record, times: list[float], warmup: bool) -> Record:
    rec.times = [round(t, 4) for t in times]
    rec.seconds = median(times)
    rec.warmup = warmup
    return rec


def run_numpy(case: Case, reps: int, warmup: bool) -> Record:
    rec = Record("numpy", case.n, case.dtype)
    with TreeRss() as rss:
        times, c = timed(lambda: case.a @ case.b, reps, warmup=warmup)
    rss.fill(rec, task_from_workers=False)
    case.want = c
    rec.rel_error, rec.correct = 0.0, True
    return _finish(rec, times, warmup)


def run_dask(case: Case, reps: int, warmup: bool) -> Record:
    rec = Record("dask", case.n, case.dtype)
    try:
        import dask
        import dask.array as da
    except ImportError:
        rec.status, rec.note = "skipped", "dask is not installed (pip install -e '.[bench]')"
        return rec
    chunk = -(-case.n // 2)
    x, y = da.from_array(case.a, chunks=chunk), da.from_array(case.b, chunks=chunk)
    with TreeRss() as rss:
        times, c = timed(lambda: (x @ y).compute(scheduler="threads"), reps, warmup=warmup)
    rss.fill(rec, task_from_workers=False)
    rec.note = f"dask {dask.__version__}, threaded scheduler, chunks {chunk}"
    rec.check(c, case.want)
    return _finish(rec, times, warmup)


# --- Cannon ------------------------------------------------------------------------------------


def cannon_peer_bytes(stats: list[dict], itemsize: int) -> float | None:
    """Bytes the peer links carried in one stage (headers included), as the tasks counted
    them on the wire: the sum over tasks of what each sent. (With inputs placed pre-skewed
    or made in the tasks, that is 2 blocks per task per shift, q−1 shifts.)"""
    if not stats or "peer_bytes_sent" not in stats[0]:
        return None
    return float(sum(s.get("peer_bytes_sent", 0) for s in stats))


def cannon_split(stats: list[dict]) -> dict[str, float]:
    """Where the slowest task's stage time went (seconds)."""
    slow = max(stats, key=lambda s: s.get("total", 0.0))
    inputs, compute = slow.get("inputs_ready", 0.0), slow.get("gemm", 0.0)
    comm = slow.get("exchange_wait", 0.0)
    total = slow.get("total", 0.0)
    wall = slow.get("stage_seconds", total)
    return {
        "wall": wall,
        "inputs": inputs,  # start the listener, read or make the round-0 blocks (JVM -> Python)
        "compute": compute,  # the block products
        "communication": comm,  # waiting for a shift the products did not hide
        "task_other": max(0.0, total - inputs - compute - comm),  # handing C back to the JVM
        "spark_overhead": max(0.0, wall - total),  # launching the barrier stage, workers, caching
        "gather_wait": slow.get("gather_wait", 0.0),  # informational: overlapped with the products
    }


def _cannon_memory(rec: Record, stats: list[dict]) -> None:
    block = float(stats[0]["block_bytes"])
    rec.task_rss = max(s["peak_rss"] for s in stats)
    rec.task_rss_how = "kernel high-water mark of the task's worker, reset at task start"
    growth = max(s["peak_rss"] - s["rss_start"] for s in stats)
    rec.extra.update(
        block_bytes=block,
        rss_growth=growth,
        rss_growth_blocks=growth / block,
        rss_budget=5 * block + 64 * MiB,
        q=int(stats[0]["q"]),
        panels=int(stats[0].get("panels", 1)),
    )


def run_cannon_stage(case: Case, reps: int, warmup: bool) -> Record:
    from jampi_dsl.executors.cannon import CannonConfig, cannon_matmul
    from jampi_dsl.executors.distributed import DistMatrix
    from jampi_dsl.executors.sources import GeneratorSource
    from jampi_dsl.session import grid_side, task_slots

    spark, n = case.spark, case.n
    rec = Record("cannon-stage", n, case.dtype)
    q = grid_side(task_slots(spark))
    block = (-(-n // q), -(-n // q))
    da = DistMatrix.from_source(spark, GeneratorSource("uniform", (n, n), case.dtype, 1), block).materialize()
    db = DistMatrix.from_source(spark, GeneratorSource("uniform", (n, n), case.dtype, 2), block).materialize()
    stats: list[dict] = []
    before_shuffle = shuffle_read_total(spark.sparkContext)
    try:
        with TreeRss() as rss:
            times, c = timed(
                lambda: cannon_matmul(spark, da, db, config=CannonConfig(stats=stats)),
                reps,
                warmup=warmup,
                before=stats.clear,
                release=lambda r: r.unpersist(),
            )
        after_shuffle = shuffle_read_total(spark.sparkContext)
        got = c.to_numpy()
        c.unpersist()
    finally:
        da.unpersist()
        db.unpersist()
    rss.fill(rec, task_from_workers=False)
    _cannon_memory(rec, stats)
    rec.peer_bytes = cannon_peer_bytes(stats, np.dtype(case.dtype).itemsize)
    if before_shuffle is not None and after_shuffle is not None:
        rec.shuffle_bytes = (after_shuffle - before_shuffle) / (reps + int(warmup))
    rec.extra["split"] = cannon_split(stats)
    rec.variant = f"{q}x{q} grid"
    rec.check(got, case.want)
    return _finish(rec, times, warmup)


# --- jampi as a user runs it -------------------------------------------------------------------


def run_jampi(case: Case, method: str, reps: int, warmup: bool) -> Record:
    import jampi_dsl
    from jampi_dsl.errors import PlanError
    from jampi_dsl.executors.cannon import CannonConfig
    from jampi_dsl.planner import ir

    rec = Record(f"jampi-{method}", case.n, case.dtype)
    js = jampi_dsl.session(executor=method)
    stats: list[dict] = []
    js._ctx_options["cannon_config"] = CannonConfig(stats=stats)  # per-task stats when Cannon runs
    product = js.random(case.n, case.n, seed=1, dtype=case.dtype) @ js.random(case.n, case.n, seed=2, dtype=case.dtype)
    try:
        plan = js.plan([ir.Result(product.node)])
    except PlanError as err:
        rec.status, rec.note = "skipped", f"does not apply: {err.message}"
        return rec
    chosen = sorted({s.method for s in plan.steps if isinstance(s.node, ir.PRODUCT_NODES)})
    rec.variant = "+".join(chosen)
    sc = case.spark.sparkContext
    before_shuffle = shuffle_read_total(sc)
    with TreeRss() as rss:
        times, got = timed(product.to_numpy, reps, warmup=warmup, before=stats.clear)
    after_shuffle = shuffle_read_total(sc)
    rss.fill(rec)
    if stats:
        _cannon_memory(rec, stats)
        rec.peer_bytes = cannon_peer_bytes(stats, np.dtype(case.dtype).itemsize)
    if before_shuffle is not None and after_shuffle is not None:
        rec.shuffle_bytes = (after_shuffle - before_shuffle) / (reps + int(warmup))
    if "mllib" in chosen:
        rec.blas = mllib_blas(sc)
    rec.check(got, case.want)
    return _finish(rec, times, warmup)


# --- MLlib on blocks cached in the JVM -----------------------------------------------------------


def mllib_blocks(n: int, fractions: tuple[int, ...] = (8, 4, 2)) -> list[int]:
    """The block sizes measured: n/8, n/4, n/2 by default (at least 16)."""
    return sorted({max(16, math.ceil(n / k)) for k in fractions})


def jvm_gemm_rate(sc, b: int) -> float | None:
    """FLOP/s of one ``DenseMatrix.multiply`` of two b×b matrices in the JVM: the BLAS MLlib's
    products call, measured without the shuffle around it (b ≤ 2048: one Java-BLAS product at
    4096 takes half a minute)."""
    if b > 2048:
        return None
    matrices = sc._jvm.org.apache.spark.mllib.linalg.DenseMatrix
    rng = sc._jvm.java.util.Random(7)
    x, y = matrices.rand(b, b, rng), matrices.rand(b, b, rng)
    if b < 1024:
        x.multiply(y)  # the MLlib runs just warmed the large sizes up
    t0 = time.perf_counter()
    x.multiply(y)
    return 2.0 * b**3 / (time.perf_counter() - t0)


def run_mllib(spark, a: np.ndarray, b: np.ndarray, want: np.ndarray, system: str, block: int,
              reps: int, warmup: bool, dtype: str = "float64") -> Record:
    """``BlockMatrix.multiply`` at one block size; the product is cached and counted (it stays in
    the JVM, like Cannon's), then collected once, untimed, to check it."""
    from jampi_dsl.executors.mllib import from_block_matrix, to_block_matrix

    n = a.shape[0]
    rec = Record(system, n, dtype, variant=f"b={block}", extra={"block": block})
    sc = spark.sparkContext
    level = sc._jvm.org.apache.spark.storage.StorageLevel.MEMORY_AND_DISK()
    ja, jb = to_block_matrix(spark, a, block), to_block_matrix(spark, b, block)

    def product():
        c = ja.multiply(jb)
        c.blocks().persist(level)
        c.blocks().count()
        return c

    try:
        before = shuffle_read_total(sc)
        with TreeRss() as rss:
            times, c = timed(product, reps, warmup=warmup, release=lambda c: c.blocks().unpersist(True))
        after = shuffle_read_total(sc)
        rec.blas = mllib_blas(sc)
        rate = jvm_gemm_rate(sc, block)
        if rate:
            # Netlib's Java BLAS is single-threaded; a native OpenBLAS call uses every core.
            rec.extra.update(jvm_gemm_flops=rate, jvm_gemm_threads=1 if rec.blas.startswith("Java") else os.cpu_count())
        got = from_block_matrix(spark, c)
        c.blocks().unpersist(True)
    finally:
        ja.blocks().unpersist(True)
        jb.blocks().unpersist(True)
    rss.fill(rec, task_from_workers=False)
    rec.task_rss_how = "n/a: MLlib tasks are threads of the one JVM (see the run column)"
    if before is not None and after is not None:
        rec.shuffle_bytes = (after - before) / (reps + int(warmup))
    rec.check(got, want)
    return _finish(rec, times, warmup)


# --- MLlib with another BLAS, in a JVM of its own -----------------------------------------------------


def run_child(blas: str, a: str, b: str, want: str, plan: list[dict], out: str, log_path: str,
              timeout: float) -> list[Record]:
    """Run this module as a child (from the parent); returns its records, or one failed record."""
    argv = [sys.executable, "-m", "benchmarks.systems", "--blas", blas, "--a", a, "--b", b,
            "--want", want, "--plan", json.dumps(plan), "--out", out]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(log_path, "ab") as log:
        try:
            code = subprocess.run(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=child_env(),
                                  cwd=root, timeout=timeout, start_new_session=True).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code == 0 and os.path.exists(out):
        with open(out) as fh:
            return [Record.from_dict(d) for d in json.load(fh)]
    n = int(np.load(a, mmap_mode="r").shape[0])
    with open(log_path, errors="replace") as fh:
        tail = fh.read().strip().splitlines()[-1:] or [""]
    return [Record(f"mllib-{blas}", n, "float64", status="failed", variant=f"b={p['block']}",
                   note=f"child exited {code}: {tail[0][:200]}") for p in plan]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blas", choices=("java", "native"), required=True)
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--want", required=True)
    parser.add_argument("--plan", required=True, help="JSON list of {block, reps, warmup}")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from jampi_dsl.session import get_spark, stop_spark

    from .common import mllib_child_memory, spark_conf_for_blas

    t0 = time.perf_counter()
    spark = get_spark(conf=spark_conf_for_blas(args.blas, mllib_child_memory()))
    started = time.perf_counter() - t0
    a, b = np.load(args.a), np.load(args.b)
    want = np.load(args.want, mmap_mode="r")
    records = []
    try:
        for step in json.loads(args.plan):
            rec = run_mllib(spark, a, b, want, f"mllib-{args.blas}", int(step["block"]), int(step["reps"]),
                            bool(step["warmup"]))
            rec.extra["spark_start_seconds"] = round(started, 2)
            records.append(rec.to_dict())
            print(f"b={step['block']}: {rec.seconds:.2f} s ({rec.blas})", flush=True)
    finally:
        stop_spark()
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(records, fh)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
