"""C = A @ B: NumPy vs. jampi's Cannon barrier stage vs. MLlib ``BlockMatrix.multiply``.

    python benchmarks/matmul.py [--sizes 2048 4096] [--with-8192] [--reps 3] [--no-mllib]
                                [--driver-memory 12g] [--java-blas-up-to 4096]

All three multiply the same float64 matrices (``random(n, n)`` with seeds 1 and 2):

- NumPy ``A @ B`` in this process, with all cores;
- jampi Cannon on distributed blocks: A and B as DistMatrix in the 2×2 grid
  layout, cached in Spark (made by the executors), product left distributed
  and cached (what a following operation would consume); also Cannon with
  the operands made inside its tasks (``random`` fed straight to the stage);
- MLlib ``BlockMatrix.multiply`` on the same matrices cached in the JVM, at
  block sizes n/8, n/4 and n/2 (its best is used for the ratio). The blocks
  are built inside the JVM from the same bytes (one file read per block),
  because PySpark's own NumPy → BlockMatrix conversion is far slower than the
  product itself. The JVM gets half the machine's RAM (``--driver-memory``), as
  the suite gives MLlib: with jampi's default quarter, MLlib's n=8192 product
  at block 2048 ran out of heap. Cannon's tasks are Python workers and do not
  use it. A block size that fails is reported as failed, and the best of the
  others is used.

MLlib's speed depends on the BLAS its JVM loads, so it is measured twice:
with native BLAS (the system's ``libblas.so.3``, e.g. Debian's
libopenblas0-pthread, forced in this process's JVM) and with Spark's default
Java BLAS (forced in a child JVM of its own, the suite's ``benchmarks.systems``,
for n up to ``--java-blas-up-to``: at 8192 one Java-BLAS run takes minutes).
Without a ``libblas.so.3`` this JVM's MLlib is Java BLAS too, and says so.

Every timing is warm (one untimed run first) and the best of ``--reps``.
Peak RSS per Cannon task is the kernel's high-water mark of the task's Python
worker, reset at task start; the budget is 5 blocks + 64 MiB. This is a
benchmark that prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import psutil

from jampi_dsl.executors.blockgen import generate
from jampi_dsl.executors.cannon import CannonConfig, cannon_matmul
from jampi_dsl.executors.distributed import DistMatrix
from jampi_dsl.executors.sources import GeneratorSource
from jampi_dsl.session import get_spark, stop_spark, task_slots

if not __package__:  # run as a script: the suite's modules are imported from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import mllib_blas, native_blas_path, spark_conf_for_blas  # noqa: E402
from benchmarks.systems import mllib_blocks, run_child  # noqa: E402

MiB = 2**20


def best_of(fn, reps: int, setup=None, teardown=None) -> tuple[float, object]:
    """Warm-up run, then the best of ``reps`` timed runs; returns (seconds, last result)."""
    times, result = [], None
    for i in range(reps + 1):
        if setup:
            setup()
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
        if i:
            times.append(elapsed)
        if teardown and i < reps:
            teardown(result)
    return min(times), result


# --- MLlib ------------------------------------------------------------------------------------


def mllib_block_matrix(spark, a: np.ndarray, bs: int):
    """A cached JVM ``BlockMatrix`` of ``a`` with square blocks of ``bs``, built inside the JVM
    (jampi's builder), not with PySpark's slow converter."""
    from jampi_dsl.executors.mllib import to_block_matrix

    return to_block_matrix(spark, a, bs)


def jvm_alive(spark) -> bool:
    try:
        return not spark.sparkContext._jsc.sc().isStopped()
    except Exception:  # noqa: BLE001 - the gateway itself is gone
        return False


def run_mllib(spark, a, b, want, n, reps, results) -> bool:
    """MLlib at block sizes n/8, n/4, n/2; False when a failure took the JVM down with it."""
    for bs in mllib_blocks(n):
        try:
            results[f"mllib_{bs}"] = mllib_at(spark, a, b, want, bs, reps)
        except Exception as exc:  # noqa: BLE001 - one block size failing must not lose the run
            lines = [ln.strip() for ln in str(exc).splitlines()]
            reason = next((ln for ln in lines if "Error" in ln or "Exception" in ln), type(exc).__name__)
            results[f"mllib_{bs}"] = None
            results.setdefault("mllib_failed", []).append(bs)
            print(f"  MLlib BlockMatrix.multiply, block {bs:5d}: failed ({reason[:120]})", flush=True)
            if not jvm_alive(spark):
                print("  the JVM stopped: no further Spark measurement in this run", flush=True)
                return False
    return True


def mllib_at(spark, a, b, want, bs, reps) -> float:
    level = spark.sparkContext._jvm.org.apache.spark.storage.StorageLevel.MEMORY_AND_DISK()
    ja = mllib_block_matrix(spark, a, bs)
    jb = mllib_block_matrix(spark, b, bs)

    def product():
        c = ja.multiply(jb)
        c.blocks().persist(level)
        c.blocks().count()
        return c

    def drop(c):
        c.blocks().unpersist(True)

    try:
        secs, c = best_of(product, reps, teardown=drop)
        # Spot-check a few entries of one block against NumPy.
        first = c.blocks().first()
        (bi, bj), mat = (first._1()._1(), first._1()._2()), first._2()
        for r, col in ((0, 0), (mat.numRows() - 1, mat.numCols() - 1), (1, mat.numCols() // 2)):
            got, ref = mat.apply(r, col), want[bi * bs + r, bj * bs + col]
            assert abs(got - ref) <= 1e-9 * abs(ref), f"MLlib differs from NumPy at {(bi, bj, r, col)}"
        drop(c)
    finally:
        if jvm_alive(spark):
            ja.blocks().unpersist(True)
            jb.blocks().unpersist(True)
    print(f"  MLlib BlockMatrix.multiply, block {bs:5d}: {secs:7.2f} s", flush=True)
    return secs


def run_mllib_java(a, b, want, n, reps, results, workdir) -> None:
    """MLlib with Spark's default Java BLAS, in a child JVM: netlib picks its BLAS when a JVM
    starts. The child reads the same matrices from .npy files and times each block size the same
    way (one untimed run, then ``reps``); the best is kept, as for the other columns."""
    paths = {}
    for key, arr in (("a", a), ("b", b), ("want", want)):
        paths[key] = os.path.join(workdir, f"{key}.npy")
        np.save(paths[key], arr)
    plan = [{"block": bs, "reps": reps, "warmup": True} for bs in mllib_blocks(n)]
    out, log = os.path.join(workdir, f"java-{n}.json"), os.path.join(workdir, f"mllib-java-{n}.log")
    for rec, step in zip(run_child("java", paths["a"], paths["b"], paths["want"], plan, out, log, 3600), plan,
                         strict=False):
        bs = step["block"]
        if rec.status == "ok" and rec.correct:
            results[f"java_{bs}"] = min(rec.times)
            results["java_blas"] = rec.blas
            print(f"  MLlib BlockMatrix.multiply, Java BLAS in a child JVM, block {bs:5d}: "
                  f"{results[f'java_{bs}']:7.2f} s ({rec.blas})", flush=True)
        else:
            results.setdefault("java_failed", []).append(bs)
            print(f"  MLlib BlockMatrix.multiply, Java BLAS in a child JVM, block {bs:5d}: failed "
                  f"({rec.note[:160] or rec.status}; log {log})", flush=True)
    for key in paths.values():
        os.remove(key)


# --- Cannon -----------------------------------------------------------------------------------


def run_cannon(spark, n, reps, results):
    q = int(np.sqrt(task_slots(spark)))
    block = (-(-n // q), -(-n // q))
    sa = GeneratorSource("uniform", (n, n), np.float64, 1)
    sb = GeneratorSource("uniform", (n, n), np.float64, 2)
    da = DistMatrix.from_source(spark, sa, block).materialize()
    db = DistMatrix.from_source(spark, sb, block).materialize()
    block_bytes = block[0] * block[1] * 8
    stats: list = []

    def cached():
        stats.clear()
        return cannon_matmul(spark, da, db, config=CannonConfig(stats=stats))

    secs, c = best_of(cached, reps, teardown=lambda r: r.unpersist())
    rss = max(s["peak_rss"] for s in stats)
    growth = max(s["peak_rss"] - s["rss_start"] for s in stats)
    phases = {
        k: max(s.get(k, 0.0) for s in stats)
        for k in ("inputs_ready", "gemm", "gather_wait", "exchange_wait", "total")
    }
    results.update(
        cannon=secs,
        rss=rss,
        growth=growth,
        block=block_bytes,
        budget=5 * block_bytes + 64 * MiB,
        phases=phases,
        stage=stats[0]["stage_seconds"],
    )
    check = c.rdd.first()
    c.unpersist()
    print(f"  jampi Cannon, cached DistMatrix inputs ({q}x{q}): {secs:7.2f} s", flush=True)
    print(
        "    per task (slowest): inputs ready {inputs_ready:.2f} s, block products {gemm:.2f} s, "
        "waiting for peers {gather_wait:.2f} s, for blocks {exchange_wait:.2f} s, task {total:.2f} s".format(
            **phases
        )
    )
    budget = (5 * block_bytes + 64 * MiB) / MiB
    print(
        f"    peak RSS per task {rss / MiB:.0f} MiB (budget 5 blocks + 64 MiB = {budget:.0f} MiB)"
    )
    print(
        f"    RSS growth during the task {growth / MiB:.0f} MiB = {growth / block_bytes:.2f} blocks "
        f"(the rest is the Python worker as the task found it)"
    )

    def from_sources():
        return cannon_matmul(spark, sa, sb)

    secs2, c2 = best_of(from_sources, reps, teardown=lambda r: r.unpersist())
    c2.unpersist()
    results["cannon_src"] = secs2
    print(f"  jampi Cannon, operands made in the tasks:      {secs2:7.2f} s", flush=True)
    da.unpersist()
    db.unpersist()
    return check


def mllib_cell(r: dict, prefix: str) -> tuple[str, str]:
    """The table's 'best (block)' and 'MLlib / Cannon' cells for the MLlib rows under ``prefix``."""
    times = {int(k.split("_")[1]): v for k, v in r.items() if k.startswith(prefix) and k[len(prefix):].isdigit()
             and isinstance(v, float)}
    failed = ", ".join(str(bs) for bs in r.get(f"{prefix}failed", []))
    if not times:
        return (f"failed at {failed}" if failed else "-"), "-"
    best = min(times, key=times.get)
    text = f"{times[best]:.2f} s ({best})" + (f"; failed at {failed}" if failed else "")
    return text, f"{times[best] / r['cannon']:.1f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--with-8192", action="store_true", help="add n = 8192")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-mllib", action="store_true")
    ap.add_argument(
        "--driver-memory",
        default=f"{max(2, psutil.virtual_memory().total // 2**31)}g",
        help="the JVM's heap, which in local mode holds MLlib's blocks and shuffles (default: half the RAM)",
    )
    ap.add_argument("--java-blas-up-to", type=int, default=4096, metavar="N",
                    help="also measure MLlib with Java BLAS (child JVM) for n <= N (0: never)")
    args = ap.parse_args()
    sizes = sorted(set(args.sizes + ([8192] if args.with_8192 else [])))

    has_lib = native_blas_path() is not None
    conf = spark_conf_for_blas("native", args.driver_memory) if has_lib else {"spark.driver.memory": args.driver_memory}
    spark = get_spark(conf=conf)
    sc = spark.sparkContext
    here = mllib_blas(sc)
    native = here.startswith("native")  # what the JVM loaded, not what was asked for
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cores  {sc.master}  "
        f"slots {task_slots(spark)}  NumPy {np.__version__}  MLlib BLAS here: {here}"
        f"{'' if has_lib else ' (no libblas.so.3 on this machine)'}  driver heap {args.driver_memory}",
        flush=True,
    )
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="jampi-matmul-") as workdir:
            for n in sizes:
                print(f"n = {n}", flush=True)
                a = generate("uniform", (n, n), np.float64, seed=1)
                b = generate("uniform", (n, n), np.float64, seed=2)
                res: dict = {}
                res["numpy"], want = best_of(lambda a=a, b=b: a @ b, args.reps)
                print(f"  NumPy A @ B: {res['numpy']:7.2f} s", flush=True)
                key, blk = run_cannon(spark, n, args.reps, res)
                bm, bn = blk.shape
                assert np.allclose(blk, want[:bm, :bn], rtol=1e-10, atol=1e-8 * n), (
                    "Cannon result differs from NumPy"
                )
                rows.append((n, res))
                alive = args.no_mllib or run_mllib(spark, a, b, want, n, args.reps, res)
                if not args.no_mllib and native and n <= args.java_blas_up_to:
                    run_mllib_java(a, b, want, n, args.reps, res, workdir)
                del a, b, want
                gc.collect()
                if not alive:
                    break
    finally:
        if jvm_alive(spark):
            stop_spark()

    print()
    first, second = ("MLlib native BLAS", "MLlib Java BLAS") if native else ("MLlib Java BLAS", None)
    head = ["n", "NumPy", "Cannon (cached blocks)", "Cannon / NumPy", "Cannon (made in tasks)",
            f"{first} best (block)", f"{first} / Cannon"]
    head += [f"{second} best (block)", f"{second} / Cannon"] if second else []
    head += ["peak RSS per task (budget)", "RSS growth in the task"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n, r in rows:
        cells = [str(n), f"{r['numpy']:.2f} s", f"{r['cannon']:.2f} s", f"{r['cannon'] / r['numpy']:.2f}x",
                 f"{r['cannon_src']:.2f} s", *mllib_cell(r, "mllib_")]
        cells += [*mllib_cell(r, "java_")] if second else []
        cells += [f"{r['rss'] / MiB:.0f} MiB ({r['budget'] / MiB:.0f})",
                  f"{r['growth'] / MiB:.0f} MiB ({r['growth'] / r['block']:.2f} blocks)"]
        print("| " + " | ".join(cells) + " |")
    print(json.dumps({"rows": [{"n": n, **r} for n, r in rows]}))


if __name__ == "__main__":
    main()
