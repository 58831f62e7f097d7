"""Sparse matrices: jampi side by side with SciPy in one process and PySpark MLlib, on ``local[4]``.

    python benchmarks/sparse_matrices.py [--nodes 1000000] [--edges 20000000] [--iterations 20]
                                [--users 200000] [--items 50000] [--ratings 10000000] [--features 64]
                                [--mllib-iterations 3] [--mllib-block 100000] [--parts pagerank,ratings,memory]
                                [--small] [--json FILE]

Everything runs in this process on jampi's embedded ``local[4]`` session, except the
memory part (a child ``jampi run``, so its peak RSS is the run's own).

1. **PageRank** on a generated power-law graph (``--nodes``, ``--edges``: distinct
   (target, source) pairs with Zipf-like in- and out-degrees, as the ETL example's
   ratings), stored as ``.npz``; ``r = 0.85 (P @ r) + 0.15 / n`` with ``P = A * (1 /
   out-degree)``, ``--iterations`` steps, per iteration:

   - *jampi*: ``.lin`` with a ``for`` loop under ``auto`` (the plan is printed: the
     sparse steps run on the driver with SciPy); per iteration from the runner's
     ``on_loop`` timestamps;
   - *SciPy*: the same loop over a ``csr_array`` in this process;
   - *MLlib*: ``BlockMatrix`` of A with ``SparseMatrix`` blocks (``--mllib-block``
     rows and columns; built in the JVM from the bytes of CSC pieces, the blocks
     ``CoordinateMatrix.toBlockMatrix`` would give, without 20 million ``MatrixEntry``
     objects through Python's pickle), cached; each iteration multiplies it by r as an
     n×1 ``BlockMatrix`` and collects the result. ``--mllib-iterations`` of them.

   Ratios: jampi / SciPy (target ≤ 2), MLlib / jampi (target ≥ 5).

2. **Ratings** ``R @ F``: R ``--users`` × ``--items`` with ``--ratings`` non-zeros
   (``examples/etl/make_data.py``'s generator), F dense ``--items`` × ``--features``;
   jampi (``.lin``: ``load`` of the coordinate Parquet, ``R @ F``), SciPy ``R @ F``, and
   MLlib ``BlockMatrix.multiply`` of R's sparse blocks by F's dense ones. The product
   alone is timed (the load is reported apart): median of 3 after a warm-up.

3. **Memory**: ``jampi run`` in a child process of the ETL shape: R from Parquet,
   ``P = R @ F``, ``S = R.T @ P``, both saved as Parquet. Peak RSS of the child's
   process tree (``psutil``, sampled every 20 ms) against R's CSR size, and against
   the same child running a program that only loads F (Python, jampi, SciPy and
   pyarrow imported: the baseline). Target: peak − baseline ≤ 3 × CSR(R).

``--small`` runs every part at a size that takes a minute. The report is a markdown
table per part and one JSON line (also written to ``--json FILE``). This is a
benchmark that prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import jampi_dsl
from jampi_dsl.executors.base import RunContext
from jampi_dsl.executors.flow import execute

if not __package__:  # run as a script: the suite's modules are imported from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import TreeRss, mllib_blas  # noqa: E402
from benchmarks.iterative import (  # noqa: E402
    code_version,
    fmt_s,
    machine,
    plan_for,
    run_program,
    spark_context,
    verdict,
)

ROOT = Path(__file__).resolve().parent.parent
MASTER = "local[4]"


def log(*parts) -> None:
    print("[sparse]", *parts, file=sys.stderr, flush=True)


def _make_data():
    spec = importlib.util.spec_from_file_location("make_data", ROOT / "examples" / "etl" / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- MLlib with sparse blocks


def _jvm_array(sc, values: np.ndarray, kind: str):
    """A JVM ``int[]`` or ``double[]`` of ``values``, the bytes through a file (as jampi's own
    MLlib converter does): PySpark's pickled SparseMatrix took the JVM's unpickler over 15
    minutes for 5 million entries."""
    from jampi_dsl import spark_internals
    from jampi_dsl.executors.mllib import _channel, _scratch

    jvm = spark_internals.jvm(sc)
    dtype, width = ("<i4", 4) if kind == "int" else ("<f8", 8)
    path = str(Path(_scratch()) / f"jampi-bench-{os.getpid()}-{time.monotonic_ns()}.bin")
    buffer = jvm.java.nio.ByteBuffer.allocate(values.size * width)
    try:
        np.ascontiguousarray(values, dtype=dtype).tofile(path)
        channel = _channel(sc, path, "READ")
        try:
            while buffer.hasRemaining() and channel.read(buffer) >= 0:
                pass
        finally:
            channel.close()
    finally:
        os.unlink(path)
    buffer.flip()
    buffer.order(jvm.java.nio.ByteOrder.LITTLE_ENDIAN)
    out = spark_internals.java_array(sc, jvm.int if kind == "int" else jvm.double, values.size)
    (buffer.asIntBuffer() if kind == "int" else buffer.asDoubleBuffer()).get(out)
    return out


def mllib_sparse_blocks(sc, a: sp.csr_array, block: int):
    """A cached JVM BlockMatrix of ``a`` with SparseMatrix (CSC) blocks of ``block`` x ``block``:
    what ``CoordinateMatrix.toBlockMatrix`` gives, built without 20 million MatrixEntry objects."""
    from jampi_dsl import spark_internals

    jvm = spark_internals.jvm(sc)
    rows, cols = a.shape
    items = jvm.java.util.ArrayList()
    for bi in range(math.ceil(rows / block)):
        strip = a[bi * block:(bi + 1) * block, :].tocsc()
        for bj in range(math.ceil(cols / block)):
            piece = strip[:, bj * block:(bj + 1) * block].tocsc()
            if not piece.nnz:
                continue
            matrix = jvm.org.apache.spark.mllib.linalg.SparseMatrix(
                piece.shape[0], piece.shape[1], _jvm_array(sc, piece.indptr, "int"),
                _jvm_array(sc, piece.indices, "int"), _jvm_array(sc, piece.data, "double"))
            items.add(jvm.scala.Tuple2(jvm.scala.Tuple2(bi, bj), matrix))
    rdd = spark_internals.java_context(sc).parallelize(items, max(1, items.size())).rdd()
    matrix = jvm.org.apache.spark.mllib.linalg.distributed.BlockMatrix(rdd, block, block, rows, cols)
    matrix.blocks().persist(jvm.org.apache.spark.storage.StorageLevel.MEMORY_AND_DISK())
    matrix.blocks().count()
    return matrix


def _persistent(sc) -> set[int]:
    from jampi_dsl import spark_internals

    return {int(k) for k in spark_internals.java_context(sc).getPersistentRDDs().keySet()}


def unpersist_since(sc, before: set[int]) -> None:
    """MLlib's BlockMatrix caches its blocks' sizes (``blockInfo``) and never lets go: unpersist
    what appeared since ``before`` so a later measurement starts clean."""
    from jampi_dsl import spark_internals

    rdds = spark_internals.java_context(sc).getPersistentRDDs()
    for key in list(rdds.keySet()):
        if int(key) not in before:
            rdds.get(key).unpersist(True)


def mllib_times(spark, matrix, dense: np.ndarray, block: int) -> np.ndarray:
    """``matrix @ dense`` by ``BlockMatrix.multiply``, ``dense`` cut into ``block``-row blocks, the
    result collected to the driver."""
    from jampi_dsl.executors.mllib import from_block_matrix, to_block_matrix

    right = to_block_matrix(spark, dense, block)
    try:
        return from_block_matrix(spark, matrix.multiply(right))
    finally:
        right.blocks().unpersist(False)


# ---------------------------------------------------------------- 1. PageRank

PAGERANK = """param iterations = 20
A = load("{path}")
n = nrow(A)
P = A * (1 / maximum(sum(A, axis=0), 1))
r = ones(n, 1) / n
for k in range(iterations) {{
    r = 0.85 * (P @ r) + 0.15 / n
}}
print(r)
"""


def scipy_pagerank(a: sp.csr_array, iterations: int) -> tuple[list[float], np.ndarray]:
    n = a.shape[0]
    p = a.multiply(1 / np.maximum(a.sum(axis=0), 1).reshape(1, -1)).tocsr()
    r = np.full((n, 1), 1 / n)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        r = 0.85 * (p @ r) + 0.15 / n
        times.append(time.perf_counter() - t0)
    return times, r


def part_pagerank(args, sc, spark, folder: Path, report: dict) -> None:
    log(f"graph: {args.nodes} nodes, {args.edges} edges")
    targets, sources = _make_data().ratings_table(args.nodes, args.nodes, args.edges, seed=3)
    a = sp.csr_array((np.ones(args.edges), (targets, sources)), shape=(args.nodes, args.nodes))
    del targets, sources
    path = folder / "graph.npz"
    sp.save_npz(path, a, compressed=False)
    text = PAGERANK.format(path=path)
    js = jampi_dsl.session(master=MASTER)
    out: dict = {"nodes": args.nodes, "edges": args.edges, "iterations": args.iterations,
                 "csr_mb": (a.data.nbytes + a.indices.nbytes + a.indptr.nbytes) / 1e6}
    plan = plan_for(js, text, "pagerank.lin", {"iterations": args.iterations})
    out["jampi_methods"] = sorted(plan.methods_used) if hasattr(plan, "methods_used") else []
    run_program(js, plan_for(js, text, "pagerank.lin", {"iterations": 2}), sc=sc)  # warm-up
    gc.collect()
    run = run_program(js, plan, sc=sc)
    jampi_times = run["iteration_times"]
    out["jampi_per_iteration"] = statistics.median(jampi_times)
    out["jampi_before_loop"] = run["before_loop"]
    scipy_times, r = scipy_pagerank(a, args.iterations)
    out["scipy_per_iteration"] = statistics.median(scipy_times)
    out["max_difference"] = float(np.max(np.abs(run["values"]["r"] - r)))
    persisted = _persistent(sc)
    try:
        p = a.multiply(1 / np.maximum(a.sum(axis=0), 1).reshape(1, -1)).tocsr()
        t0 = time.perf_counter()
        m = mllib_sparse_blocks(sc, p, args.mllib_block)
        out["mllib_build"] = time.perf_counter() - t0
        n = args.nodes
        x = np.full((n, 1), 1 / n)
        times = []
        for k in range(args.mllib_iterations + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            x = 0.85 * mllib_times(spark, m, x, args.mllib_block) + 0.15 / n
            if k:
                times.append(time.perf_counter() - t0)
        m.blocks().unpersist(False)
        out["mllib_per_iteration"] = statistics.median(times)
        out["mllib_max_difference"] = float(np.max(np.abs(x - _scipy_steps(p, args.mllib_iterations + 1))))
        out["mllib_blas"] = mllib_blas(sc)
    except Exception as err:  # reported, not hidden: the row says MLlib failed and why
        out["mllib_error"] = f"{type(err).__name__}: {err}"[:300]
    finally:
        unpersist_since(sc, persisted)
    report["pagerank"] = out


def _scipy_steps(p: sp.csr_array, steps: int) -> np.ndarray:
    n = p.shape[0]
    r = np.full((n, 1), 1 / n)
    for _ in range(steps):
        r = 0.85 * (p @ r) + 0.15 / n
    return r


# ---------------------------------------------------------------- 2. R @ F

PRODUCT = """R = load("{folder}/ratings.parquet")
F = load("{folder}/item_features.parquet")
P = R @ F
print(P)
"""


def part_ratings(args, sc, spark, folder: Path, report: dict) -> None:
    log(f"ratings: {args.users} x {args.items}, {args.ratings} non-zeros, {args.features} features")
    data = folder / "ratings"
    _make_data().write_data(args.users, args.items, args.ratings, args.features, data)
    js = jampi_dsl.session(master=MASTER)
    plan = plan_for(js, PRODUCT.format(folder=data), "product.lin")
    product_seconds, load_seconds, value = [], [], None
    for _ in range(4):  # the first is a warm-up
        result = execute(plan, RunContext(spark_factory=js._spark_for_plans, options=dict(js._ctx_options)))
        product_seconds.append(sum(t.seconds for t in result.timings if t.step.node.op == "matmul"))
        load_seconds.append(sum(t.seconds for t in result.timings if t.step.node.op == "load"))
        value = result.values["P"]
    # The same program with R on the executors: read by the tasks into CSR blocks, F broadcast.
    spread = jampi_dsl.session(master=MASTER, executor="broadcast")
    spread_plan = plan_for(spread, PRODUCT.format(folder=data), "product.lin")
    spread_product, spread_load = [], []
    for _ in range(4):  # the first is a warm-up
        persisted = _persistent(sc)
        result = execute(spread_plan, RunContext(spark_factory=spread._spark_for_plans,
                                                 options=dict(spread._ctx_options)))
        spread_product.append(sum(t.seconds for t in result.timings if t.step.node.op == "matmul"))
        spread_load.append(sum(t.seconds for t in result.timings if t.step.node.op == "load"))
        spread_value = result.values["P"]
        unpersist_since(sc, persisted)
    r = js.load(data / "ratings.parquet").to_scipy()
    f = js.load(data / "item_features.parquet").to_numpy()
    scipy_seconds = []
    for _ in range(4):
        t0 = time.perf_counter()
        want = r @ f
        scipy_seconds.append(time.perf_counter() - t0)
    out = {"users": args.users, "items": args.items, "ratings": args.ratings, "features": args.features,
           "jampi_product": statistics.median(product_seconds[1:]), "jampi_load": statistics.median(load_seconds[1:]),
           "scipy_product": statistics.median(scipy_seconds[1:]),
           "max_difference": float(np.max(np.abs(value - want))),
           "spread_methods": sorted({f"{t.node.op}: {t.method}" for t in spread_plan.steps}),
           "spread_product": statistics.median(spread_product[1:]), "spread_load": statistics.median(spread_load[1:]),
           "spread_max_difference": float(np.max(np.abs(spread_value - want)))}
    persisted = _persistent(sc)
    try:
        block = args.mllib_block
        m = mllib_sparse_blocks(sc, r, block)
        times = []
        for k in range(3):  # the first is a warm-up
            t0 = time.perf_counter()
            got = mllib_times(spark, m, f, block)
            if k:
                times.append(time.perf_counter() - t0)
        m.blocks().unpersist(False)
        out["mllib_product"] = statistics.median(times)
        out["mllib_max_difference"] = float(np.max(np.abs(got - want)))
    except Exception as err:
        out["mllib_error"] = f"{type(err).__name__}: {err}"[:300]
    finally:
        unpersist_since(sc, persisted)
    report["ratings"] = out


# ---------------------------------------------------------------- 3. memory

MEMORY = """R = load("{folder}/ratings.parquet")
F = load("{folder}/item_features.parquet")
P = R @ F
S = R.T @ P
save(P, "{out}/profiles.parquet", form="rows")
save(S, "{out}/gram.parquet", form="rows")
"""
BASELINE = """F = load("{folder}/item_features.parquet")
save(F, "{out}/features.parquet", form="rows")
"""


def _peak(program: Path) -> tuple[float, float]:
    """Peak RSS of a child `jampi run` (its whole process tree) and its wall time."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "jampi_dsl", "run", "--quiet", str(program)])
    with TreeRss(child.pid, interval=0.02) as rss:
        child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"jampi run {program} exited {child.returncode}")
    return rss.peak, time.perf_counter() - started


def part_memory(args, folder: Path, report: dict) -> None:
    data = folder / "ratings"
    if not (data / "ratings.parquet").exists():
        _make_data().write_data(args.users, args.items, args.ratings, args.features, data)
    r = jampi_dsl.session(executor="local").load(data / "ratings.parquet").to_scipy()
    csr = r.data.nbytes + r.indices.nbytes + r.indptr.nbytes
    del r
    (folder / "memory.lin").write_text(MEMORY.format(folder=data, out=folder / "out"))
    (folder / "baseline.lin").write_text(BASELINE.format(folder=data, out=folder / "out"))
    base, _ = _peak(folder / "baseline.lin")
    peak, seconds = _peak(folder / "memory.lin")
    dense = args.users * args.items * 8
    report["memory"] = {"csr_mb": csr / 1e6, "baseline_mb": base / 1e6, "peak_mb": peak / 1e6,
                        "over_baseline_csr": (peak - base) / csr, "dense_r_gb": dense / 1e9, "seconds": seconds}


# ---------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = []
    pr = report.get("pagerank")
    if pr:
        lines += [f"PageRank, {pr['nodes']:,} nodes, {pr['edges']:,} edges, per iteration "
                  f"(median of {pr['iterations']}; MLlib of its iterations):", "",
                  "| system | s / iteration | ratio | target |", "|---|---|---|---|",
                  f"| SciPy `csr @ r`, one process | {fmt_s(pr['scipy_per_iteration'])} | 1 | |",
                  f"| jampi `.lin` loop, auto on local[4] | {fmt_s(pr['jampi_per_iteration'])} | "
                  f"{pr['jampi_per_iteration'] / pr['scipy_per_iteration']:.2f}× SciPy | ≤ 2× "
                  f"{verdict(pr['jampi_per_iteration'] <= 2 * pr['scipy_per_iteration'])} |"]
        if "mllib_per_iteration" in pr:
            ratio = pr["mllib_per_iteration"] / pr["jampi_per_iteration"]
            lines.append(f"| MLlib BlockMatrix, sparse blocks (r off SciPy's by {pr['mllib_max_difference']:.0e}) | "
                         f"{fmt_s(pr['mllib_per_iteration'])} | {ratio:.1f}× slower than jampi | ≥ 5× "
                         f"{verdict(ratio >= 5)} |")
        else:
            lines.append(f"| MLlib BlockMatrix, sparse blocks | failed: {pr.get('mllib_error')} | | |")
        lines += ["", f"jampi against SciPy: largest difference {pr['max_difference']:.1e}; "
                      f"A's CSR {pr['csr_mb']:.0f} MB.", ""]
    rt = report.get("ratings")
    if rt:
        lines += [f"`R @ F`, R {rt['users']:,} × {rt['items']:,} with {rt['ratings']:,} non-zeros, "
                  f"F {rt['items']:,} × {rt['features']} (the product alone, median of 3):", "",
                  "| system | s | ratio | target |", "|---|---|---|---|",
                  f"| SciPy, one process | {fmt_s(rt['scipy_product'])} | 1 | |",
                  f"| jampi, auto on local[4] | {fmt_s(rt['jampi_product'])} | "
                  f"{rt['jampi_product'] / rt['scipy_product']:.2f}× SciPy | ≤ 2× "
                  f"{verdict(rt['jampi_product'] <= 2 * rt['scipy_product'])} |",
                  f"| jampi, --executor broadcast: R read by the tasks into CSR blocks, F broadcast | "
                  f"{fmt_s(rt['spread_product'])} | {rt['spread_product'] / rt['scipy_product']:.2f}× SciPy | ≤ 2× "
                  f"{verdict(rt['spread_product'] <= 2 * rt['scipy_product'])} |"]
        if "mllib_product" in rt:
            ratio = rt["mllib_product"] / rt["jampi_product"]
            lines.append(f"| MLlib BlockMatrix.multiply (off SciPy's by {rt['mllib_max_difference']:.0e}) | "
                         f"{fmt_s(rt['mllib_product'])} | {ratio:.1f}× slower than jampi | ≥ 5× {verdict(ratio >= 5)} |")
        else:
            lines.append(f"| MLlib BlockMatrix.multiply | failed: {rt.get('mllib_error')} | | |")
        lines += ["", f"jampi's load of R from Parquet: {fmt_s(rt['jampi_load'])} on the driver, "
                      f"{fmt_s(rt['spread_load'])} by the tasks (R and F, kept on the executors); largest "
                      f"difference from SciPy {rt['max_difference']:.1e} (driver), "
                      f"{rt['spread_max_difference']:.1e} (executors). Steps of the broadcast run: "
                      + ", ".join(rt["spread_methods"]) + ".", ""]
    mem = report.get("memory")
    if mem:
        lines += ["Memory of `jampi run` (R from Parquet, `R @ F`, `R.T @ (R @ F)`, Parquet out):", "",
                  "| | MB |", "|---|---|",
                  f"| R as CSR | {mem['csr_mb']:.0f} |",
                  f"| baseline run (only F loaded and saved) | {mem['baseline_mb']:.0f} |",
                  f"| the run's peak RSS | {mem['peak_mb']:.0f} |",
                  f"| peak − baseline | {mem['peak_mb'] - mem['baseline_mb']:.0f} = "
                  f"{mem['over_baseline_csr']:.2f} × CSR (target ≤ 3 {verdict(mem['over_baseline_csr'] <= 3)}) |",
                  "", f"R dense would be {mem['dense_r_gb']:.0f} GB; the run took {mem['seconds']:.1f} s.", ""]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=20_000_000)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--ratings", type=int, default=10_000_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--mllib-iterations", type=int, default=3)
    parser.add_argument("--mllib-block", type=int, default=100_000)
    parser.add_argument("--parts", default="pagerank,ratings,memory")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.small:
        args.nodes, args.edges, args.users, args.items, args.ratings = 100_000, 1_000_000, 20_000, 5_000, 500_000
        args.mllib_block = 25_000
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    parts = set(args.parts.split(","))
    sc = spark_context() if parts & {"pagerank", "ratings"} else None
    spark = None
    if sc is not None:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
    report: dict = {"machine": machine(sc) if sc else {}, "code": code_version(), "args": vars(args) | {"json": None}}
    with tempfile.TemporaryDirectory(prefix="jampi-sparse-") as tmp:
        folder = Path(tmp)
        if "pagerank" in parts:
            part_pagerank(args, sc, spark, folder, report)
        if "ratings" in parts:
            part_ratings(args, sc, spark, folder, report)
        if "memory" in parts:
            part_memory(args, folder, report)
    print(markdown(report))
    line = json.dumps(report, default=str)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
