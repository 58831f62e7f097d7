"""Programs with loops: power iteration and CG, jampi side by side with NumPy, MLlib and Dask.

    python benchmarks/iterative.py [--n 8192] [--iterations 50] [--methods broadcast,cannon]
                                   [--mllib-iterations 50] [--mllib-budget 300] [--written-iterations 3]
                                   [--lineage-n 2048] [--lineage-iterations 500] [--window 5]
                                   [--cg-n 8192] [--cg-d 1024] [--cg-tol 1e-10] [--cg-methods broadcast,cannon]
                                   [--parts power,lineage,cg] [--small] [--json FILE]

Everything runs in this process on jampi's embedded ``local[4]`` session, one
measurement at a time, on generated data: ``randn(n, n, seed=1)`` in the
``.lin`` programs and the same values in NumPy (``blockgen.generate``).

1. **Power iteration** ``w = A @ v; v = w / norm(w)`` on a dense n×n float64 A, per
   iteration, after a warm-up:

   - *jampi*, a ``.lin`` program with a ``for`` loop, the product forced onto Spark
     (``jampi_dsl.session(executor=...)``, each of ``--methods``) and under ``auto``.
     The plan is checked before the run: the loop body's products must be Spark
     methods, and the segment before the loop should make A on the executors, where
     the loop keeps it. When the program as written gets A made on the driver
     instead (every iteration would then ship it to the executors), the row lowers
     the planner's driver budget (``jampi.local.maxBytes``) below A's size, which
     puts A's generator in the tasks, and says so; the program as written is then
     measured too, for ``--written-iterations``. Per iteration = (end of the loop −
     start of the loop) / iterations, from the ``on_loop`` timestamps of
     ``executors.runner.execute`` (the loop starts after the part before it and
     ends when the first step after it starts), after a 2-iteration warm-up run;
   - *NumPy* ``A @ v`` on the driver;
   - *MLlib*: an ``IndexedRowMatrix`` of A (built in the JVM from A's bytes, as the
     suite builds MLlib's matrices), its rows cached; every iteration
     ``.multiply(DenseMatrix(v))``, the rows collected to the driver and normalised.
     Capped at ``--mllib-iterations`` and at ``--mllib-budget`` seconds of
     predicted loop time (the report says when);
   - *Dask*: ``dask.array`` of A in n/2 chunks, persisted; ``x = A @ v;
     v = (x / norm(x)).persist()`` each iteration (threaded scheduler).

   Ratios: jampi / NumPy (target ≤ 2), MLlib / jampi (target ≥ 5), jampi / Dask
   (target ≤ 1.5). Where one iteration of jampi's goes: the steps' own times
   (the runner's step timings), Spark jobs per iteration (the status tracker's
   job ids), and on A kept as the plan keeps it, alone: an empty job, a job that
   only reads A's blocks into the Python workers, the broadcast product by itself.

2. **Lineage growth**: the same kept-distributed loop at ``--lineage-n``,
   ``--lineage-iterations`` iterations: the mean of a window of iterations around
   the 10th against one around the last (target: within 10 %), with the cached
   RDDs in the JVM, the Python workers and the RSS of the process tree at both.

3. **CG ridge regression** ``(X.T X + lam I) w = X.T y``, X n×d, to a relative
   residual of ``--cg-tol``, as a ``.lin`` program with a ``while`` loop and a
   ``break``; under ``auto`` and each of ``--cg-methods`` (X kept on the executors
   as above, and the program as written when that differs), against the same CG
   in NumPy: whole-run time
   (data generation included on both sides; target ≤ 2×), iterations taken, and
   how the solutions agree.

``--small`` runs every part at a size that takes a minute or two. The report is
a markdown table per part, then one JSON line of every figure (also written to
``--json FILE``). This is a benchmark that prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np
import psutil

import jampi_dsl
from jampi_dsl.api import _param_values, plan_source
from jampi_dsl.executors.base import RunContext
from jampi_dsl.executors.blockgen import generate
from jampi_dsl.executors.flow import execute
from jampi_dsl.planner import ir
from jampi_dsl.planner.flow import Branch, Loop, Segment
from jampi_dsl.planner.methods import DISTRIBUTED
from jampi_dsl.session import get_spark, spark_for_plans

if not __package__:  # run as a script: the suite's modules are imported from the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import mllib_blas  # noqa: E402

MASTER = "local[4]"
SEED_A, SEED_X, SEED_Y = 1, 1, 2
LAM = 0.1

POWER = """\
param iters = 50
A = randn({n}, {n}, seed={seed})
v = ones({n}, 1)
for i in range(iters) {{
    w = A @ v
    v = w / norm(w)
}}
print(v)
"""

CG = """\
param lam = {lam}
param tol = {tol}
param maxit = {maxit}
X = randn({n}, {d}, seed={sx})
y = randn({n}, 1, seed={sy})
b = X.T @ y
w = zeros({d}, 1)
r = b
p = r
rs = sum(r * r)
stop = tol * tol * rs
i = 0
while i < maxit {{
    Ap = X.T @ (X @ p) + lam * p
    alpha = rs / sum(p * Ap)
    w = w + alpha * p
    r = r - alpha * Ap
    rsnew = sum(r * r)
    p = r + (rsnew / rs) * p
    rs = rsnew
    i = i + 1
    if rs <= stop {{
        break
    }}
}}
print(i)
print(rs)
print(w)
"""


def log(*parts: Any) -> None:
    print(*parts, flush=True)


def rel(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, dtype=np.float64).ravel(), np.asarray(want, dtype=np.float64).ravel()
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def fmt_s(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 0.01:
        return f"{x:.{digits}f} s"
    return f"{x * 1000:.2f} ms"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


# ---------------------------------------------------------------- the machine and the session


def spark_context():
    return spark_for_plans(MASTER, {}).sparkContext


def machine(sc) -> dict:
    import pyspark
    from threadpoolctl import threadpool_info

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = [f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info() if i.get("user_api") == "blas"]
    try:
        import dask

        dask_version = dask.__version__
    except ImportError:
        dask_version = None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} vCPUs of {cpu}, "
                   f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({', '.join(blas) or 'BLAS unknown'})",
        "pyspark": pyspark.__version__,
        "java": sc._jvm.java.lang.System.getProperty("java.version"),
        "dask": dask_version,
        "master": sc.master,
        "mllib_blas": mllib_blas(sc),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "code": code_version(),
        "command": " ".join([os.path.relpath(sys.argv[0]) if sys.argv[0].endswith(".py") else sys.argv[0],
                             *sys.argv[1:]]),
    }


def code_version() -> str:
    """The commit, and whether jampi_dsl/ had uncommitted changes (with a digest of them)."""
    import hashlib
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "jampi_dsl"], cwd=root, capture_output=True,
                              timeout=30).stdout
        new = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "jampi_dsl"], cwd=root,
                             capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    digest = hashlib.sha1(diff)
    for path in sorted(new):
        with open(os.path.join(root, path), "rb") as fh:
            digest.update(fh.read())
    if not diff and not new:
        return commit
    return f"{commit} + uncommitted changes to jampi_dsl/ (digest {digest.hexdigest()[:10]})"


def last_job_id(sc) -> int:
    ids = sc.statusTracker().getJobIdsForGroup(None)
    return max(ids) if ids else -1


def tree_state(sc) -> dict:
    """The process tree now: RSS, Python workers, and what the JVM holds cached."""
    me = psutil.Process()
    rss, workers = 0, 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            rss += proc.memory_info().rss
            if "pyspark.daemon" in " ".join(proc.cmdline()):
                workers += 1
        except psutil.Error:
            pass
    try:
        cached = int(sc._jsc.sc().getPersistentRDDs().size())
    except Exception:  # noqa: BLE001 - an internal API moved: no figure rather than a wrong one
        cached = None
    return {"rss_mib": round(rss / 2**20), "python_workers": workers, "cached_rdds": cached}


# ---------------------------------------------------------------- running a .lin program


def session_for(executor: str, keep_on_spark_bytes: int | None):
    """The API session a program runs under. ``keep_on_spark_bytes``: the planner's driver
    budget (``jampi.local.maxBytes``), set below the big matrix so it is made on the executors."""
    conf = {"jampi.local.maxBytes": str(int(keep_on_spark_bytes))} if keep_on_spark_bytes else {}
    return jampi_dsl.session(master=MASTER, conf=conf, executor=executor)


def configure(method: str, text: str, name: str, big: str, big_bytes: int, params: dict, *,
              lower: bool = True) -> dict:
    """The session and plan a row runs. Forced onto Spark, the program as written should make
    ``big`` on the executors and keep it there across iterations; when the plan makes it on the
    driver instead (then every iteration ships it), and ``lower``, the planner's driver budget is
    set below ``big``'s size, which puts its generator in the tasks, and the row says so."""
    js = session_for(method, None)
    plan = plan_for(js, text, name, params)
    facts = plan_facts(plan, big)
    config = {"method": method, "js": js, "plan": plan, "facts": facts, "lowered": False, "note": "",
              "label": f"jampi {method}" + (" (planner's choice)" if method == "auto" else "")}
    if method == "auto" or facts["big_kept_on_spark"]:
        return config
    if not lower:
        config["written"] = True
        config["label"] = f"jampi {method}, as written: {big} made on the driver"
        config["note"] = f"{big} made by the driver, shipped to the executors by every iteration"
        return config
    js = session_for(method, big_bytes // 2)
    plan = plan_for(js, text, name, params)
    config.update(js=js, plan=plan, facts=plan_facts(plan, big), lowered=True,
                  label=f"jampi {method}, driver budget < {big}",
                  note=f"as written the plan makes {big} on the driver ({facts['big_made_by']}); "
                       f"jampi.local.maxBytes={big_bytes // 2} puts it in the tasks")
    return config


def plan_for(js, text: str, name: str, params: dict | None = None):
    return plan_source(text, name, _param_values(params), js.resources, js.executor, forced_by=js._forced_by)


def _walk(items, where: str):
    """(where, segment) for every segment, ``where`` = before / loop / after the first loop."""
    for item in items:
        if isinstance(item, Segment):
            yield where, item
        elif isinstance(item, Loop):
            for part in (item.header, item.cond):
                if part is not None:
                    yield "loop", part
            yield from _walk(item.body, "loop")
            if where == "before":
                where = "after"
        elif isinstance(item, Branch):
            for cond, _slot, body in item.cases:
                if cond is not None:
                    yield where, cond
                yield from _walk(body, where)
            if item.orelse is not None:
                yield from _walk(item.orelse, where)


def plan_facts(plan, big: str) -> dict:
    """What the checks read of a plan: where the step that makes ``big`` runs, and the methods
    of the loop body's products and other steps."""
    made_by = None
    body_products, body_other = [], []
    for where, segment in _walk(plan.flow.body, "before"):
        for step in segment.plan.steps:
            node = step.node
            if isinstance(node, ir.Export) and node.slot == big and where == "before":
                made_by = segment.plan.step(node.x).method
            if where != "loop" or isinstance(node, (ir.Export, ir.Input, ir.Const)):
                continue
            if isinstance(node, ir.PRODUCT_NODES):
                body_products.append(step.method)
            else:
                body_other.append(step.method)
    distributed = made_by in DISTRIBUTED
    products_on_spark = bool(body_products) and all(m in DISTRIBUTED for m in body_products)
    return {"big_made_by": made_by, "big_kept_on_spark": distributed, "body_products": body_products,
            "body_other": sorted(set(body_other)), "body_products_on_spark": products_on_spark}


def steps_of(plan, part: str) -> set[int]:
    """ids of the step objects of ``part`` ("before", "loop" or "after" the first top-level loop);
    the runner hands these very objects to ``on_start`` and keeps them in its timings."""
    return {id(step) for where, segment in _walk(plan.flow.body, "before") if where == part
            for step in segment.plan.steps}


def run_program(js, plan, *, sample_at: tuple[int, ...] = (), sc=None) -> dict:
    """Execute ``plan``: total seconds, the part before the loop, every iteration's seconds
    (from ``on_loop``), step timings, outputs, and Spark jobs run."""
    after = steps_of(plan, "after")
    marks: list[float] = []
    end: list[float] = []
    samples: dict[int, dict] = {}
    sampling = [0.0]

    def on_loop(loop, iteration, values):
        marks.append(time.perf_counter())
        if iteration in sample_at and sc is not None:
            t = time.perf_counter()
            samples[iteration] = tree_state(sc)
            sampling[0] += time.perf_counter() - t

    def on_start(step):
        if not end and id(step) in after:
            end.append(time.perf_counter())

    sc = sc or spark_context()
    jobs_before = last_job_id(sc)
    gc.collect()
    started = time.perf_counter()
    result = execute(plan, RunContext(spark_factory=js._spark_for_plans, options=dict(js._ctx_options)),
                     on_start=on_start, on_loop=on_loop)
    finished = time.perf_counter()
    loop_end = end[0] if end else finished
    iteration_times = [b - a for a, b in zip(marks, marks[1:] + [loop_end], strict=True)]
    return {
        "total": finished - started,
        "before_loop": (marks[0] if marks else finished) - started,
        "loop": loop_end - (marks[0] if marks else loop_end),
        "after_loop": finished - loop_end,
        "iterations": len(marks),
        "iteration_times": iteration_times,
        "sampling_seconds": sampling[0],
        "samples": samples,
        "values": result.values,
        "timings": result.timings,
        "jobs": last_job_id(sc) - jobs_before,
    }


def step_profile(plan, timings, iterations: int) -> list[dict]:
    """Seconds per iteration of each kind of step of the loop body (summed over the run)."""
    body = steps_of(plan, "loop")
    names = plan.program.names()
    rows: dict[tuple, float] = {}
    for timing in timings:
        node = timing.step.node
        if id(timing.step) not in body:
            continue
        label = getattr(node, "slot", None) or names.get(node.uid) or ""
        op = getattr(node, "operator", None) or node.op
        key = (f"{op} {label}".strip(), timing.step.method)
        rows[key] = rows.get(key, 0.0) + timing.seconds
    return [{"step": k[0], "method": k[1], "seconds_per_iteration": v / max(1, iterations)}
            for k, v in sorted(rows.items(), key=lambda kv: -kv[1])]


# ---------------------------------------------------------------- 1. power iteration


def numpy_power(a: np.ndarray, iterations: int) -> tuple[float, np.ndarray]:
    v = np.ones((a.shape[0], 1))
    for _ in range(3):  # warm-up: BLAS threads, page faults of A
        w = a @ v
        _ = w / np.linalg.norm(w)
    gc.collect()
    v = np.ones((a.shape[0], 1))
    started = time.perf_counter()
    for _ in range(iterations):
        w = a @ v
        v = w / np.linalg.norm(w)
    return (time.perf_counter() - started) / iterations, v


def dask_power(a: np.ndarray, iterations: int) -> dict:
    try:
        import dask
        import dask.array as da
    except ImportError:
        return {"status": "skipped", "note": "dask is not installed (pip install 'dask[array]')"}
    n = a.shape[0]
    chunk = max(1, n // 2)
    with dask.config.set(scheduler="threads"):
        big = da.from_array(a, chunks=(chunk, chunk)).persist()

        def loop(k):
            v = da.from_array(np.ones((n, 1)), chunks=(chunk, 1)).persist()
            for _ in range(k):
                x = big @ v
                v = (x / da.linalg.norm(x)).persist()
            return v

        loop(3)  # warm-up
        gc.collect()
        started = time.perf_counter()
        v = loop(iterations)
        seconds = (time.perf_counter() - started) / iterations
        return {"status": "ok", "per_iteration": seconds, "v": v.compute(), "chunks": f"{chunk}×{chunk}"}


def mllib_power(spark, a: np.ndarray, iterations: int, budget: float) -> dict:
    """PySpark MLlib: IndexedRowMatrix (rows cached) .multiply(DenseMatrix v), rows collected."""
    from pyspark.mllib.linalg import DenseMatrix
    from pyspark.mllib.linalg.distributed import IndexedRowMatrix

    from jampi_dsl.executors.mllib import to_block_matrix

    sc = spark.sparkContext
    n = a.shape[0]
    started = time.perf_counter()
    jbm = to_block_matrix(spark, a, max(1, n // 4))
    jrows_matrix = jbm.toIndexedRowMatrix()
    level = sc._jvm.org.apache.spark.storage.StorageLevel.MEMORY_AND_DISK()
    jrows_matrix.rows().persist(level)
    jrows_matrix.rows().count()
    jbm.blocks().unpersist(True)
    matrix = IndexedRowMatrix(jrows_matrix)
    build = time.perf_counter() - started

    def step(v: np.ndarray) -> np.ndarray:
        x = matrix.multiply(DenseMatrix(n, 1, v.ravel()))
        out = np.empty((n, 1))
        for row in x.rows.collect():
            out[row.index, 0] = row.vector[0]
        return out / np.linalg.norm(out)

    try:
        v = np.ones((n, 1))
        for _ in range(2):  # warm-up (JIT, Python workers)
            v = step(v)
        gc.collect()
        v = np.ones((n, 1))
        times = []
        t0 = time.perf_counter()
        v = step(v)
        times.append(time.perf_counter() - t0)
        run = iterations
        if times[0] * iterations > budget:
            run = max(2, min(iterations, int(budget / times[0])))
        for _ in range(run - 1):
            t0 = time.perf_counter()
            v = step(v)
            times.append(time.perf_counter() - t0)
    finally:
        jrows_matrix.rows().unpersist(True)
    note = "" if run == iterations else (f"capped at {run} of {iterations} iterations (one took {fmt_s(times[0])}; "
                                         f"budget {budget:.0f} s); per iteration is their mean")
    return {"status": "ok", "per_iteration": mean(times), "median": statistics.median(times), "iterations": run,
            "build_seconds": build, "v": v, "note": note, "blas": mllib_blas(sc)}


def profile_iteration(js, n: int, seed: int, sc) -> dict:
    """One iteration's parts measured alone, on A kept the way the plan keeps a materialised
    value (``executors.spark.keep``: a shared file the tasks map, or Spark's cache): an empty
    job on 4 partitions, a job that only reads A's blocks into the Python workers, the
    broadcast product with its result collected, and NumPy's product of one block."""
    from jampi_dsl.executors.broadcast import broadcast_product
    from jampi_dsl.executors.distributed import DistMatrix
    from jampi_dsl.executors.holdings import holding, release
    from jampi_dsl.executors.sources import GeneratorSource
    from jampi_dsl.executors.spark import default_block, keep

    ctx = RunContext(spark_factory=js._spark_for_plans)
    block = default_block(ctx, (n, n), "float64")
    out: dict[str, Any] = {"block": list(block)}

    def best(fn, reps=5):
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    with holding() as held:
        made = DistMatrix.from_source(sc, GeneratorSource("normal", (n, n), "float64", seed), block)
        a = keep(made, ctx)
        out["blocks"] = a.nblocks
        out["kept_as"] = "a shared file the tasks map" if getattr(a, "source", None) is not None \
            and not a.is_cached else "Spark's cache (blocks copied JVM → Python worker per read)"
        out["empty_job"] = best(lambda: sc.parallelize(range(4), 4).count())
        out["read_blocks"] = best(lambda: a.rdd.map(lambda kv: kv[1].shape[0]).sum(), 3)
        v = np.ones((n, 1)) / math.sqrt(n)

        def product():
            with holding() as inner:
                c = broadcast_product(ctx, a, v, True)
                c.to_numpy()
            release(inner)

        out["broadcast_product"] = best(product, 3)
    release(held)
    a_local = np.ones((block[0], block[1]))
    vb = np.ones((block[1], 1))
    out["block_gemv_numpy"] = best(lambda: a_local @ vb)
    return out


def part_power(args, sc, spark, report: dict) -> None:
    n, iters = args.n, args.iterations
    text = POWER.format(n=n, seed=SEED_A)
    log(f"\n== 1. power iteration, n={n}, {iters} iterations ==")
    t0 = time.perf_counter()
    a = generate("normal", (n, n), "float64", seed=SEED_A)
    log(f"A generated in NumPy: {fmt_s(time.perf_counter() - t0)}")
    rows: list[dict] = []
    out: dict[str, Any] = {"n": n, "iterations": iters, "rows": rows}
    report["power"] = out

    per_np, v_np = numpy_power(a, iters)
    rows.append({"system": "NumPy", "per_iteration": per_np, "iterations": iters, "agree": 0.0})
    log(f"NumPy A @ v: {fmt_s(per_np)} per iteration")

    runs = []
    for method in [*args.methods, "auto"]:
        config = configure(method, text, "<power>", "A", a.nbytes, {"iters": iters})
        runs.append((config, iters))
        if config["lowered"] and method == args.methods[0] and args.written_iterations > 0:
            runs.append((configure(method, text, "<power>", "A", a.nbytes, {"iters": args.written_iterations},
                                   lower=False), args.written_iterations))
    for config, k in runs:
        js, plan, facts, label, method = (config[key] for key in ("js", "plan", "facts", "label", "method"))
        log(f"{label}: A made by {facts['big_made_by']}, body products {facts['body_products']}, "
            f"other body steps {facts['body_other']}")
        if method != "auto" and not facts["body_products_on_spark"]:
            log("  the loop's product is not on Spark: row skipped")
            rows.append({"system": label, "status": "failed", "note": f"plan: {facts}"})
            continue
        run_program(js, plan_for(js, text, "<power>", {"iters": 2}), sc=sc)  # warm-up, same sizes
        run = run_program(js, plan, sc=sc)
        per = run["loop"] / run["iterations"]
        v = run["values"]["v"]
        row = {"system": label, "method": method, "per_iteration": per,
               "median": statistics.median(run["iteration_times"]), "first": run["iteration_times"][0],
               "iterations": run["iterations"], "before_loop": run["before_loop"], "total": run["total"],
               "jobs_per_iteration": (run["jobs"]) / run["iterations"], "agree": rel(v, v_np) if k == iters else None,
               "plan": facts, "profile": step_profile(plan, run["timings"], run["iterations"])}
        if config.get("written"):
            row["written"] = True
        if config["note"]:
            row["note"] = config["note"]
        if k != iters:
            row["note"] = f"{k} iterations; " + row.get("note", "")
        rows.append(row)
        log(f"  {fmt_s(per)} per iteration (median {fmt_s(row['median'])}, first {fmt_s(row['first'])}); "
            f"before the loop {fmt_s(run['before_loop'])}; total {fmt_s(run['total'])}; "
            f"{row['jobs_per_iteration']:.1f} Spark jobs per iteration"
            + (f"; v agrees with NumPy to {row['agree']:.1e}" if row["agree"] is not None else ""))
        for p in row["profile"][:6]:
            log(f"    {p['step']:<14} {p['method']:<9} {fmt_s(p['seconds_per_iteration'])} per iteration")
        del run
        gc.collect()

    d = dask_power(a, iters)
    if d["status"] == "ok":
        rows.append({"system": f"Dask ({d['chunks']} chunks, persisted)", "per_iteration": d["per_iteration"],
                     "iterations": iters, "agree": rel(d["v"], v_np)})
        log(f"Dask: {fmt_s(d['per_iteration'])} per iteration")
    else:
        rows.append({"system": "Dask", "status": "skipped", "note": d["note"]})
        log(f"Dask skipped: {d['note']}")

    if args.mllib_iterations > 0:
        try:
            m = mllib_power(spark, a, args.mllib_iterations, args.mllib_budget)
            rows.append({"system": "MLlib IndexedRowMatrix.multiply + collect", "per_iteration": m["per_iteration"],
                         "median": m["median"], "iterations": m["iterations"], "agree": rel(m["v"], v_np)
                         if m["iterations"] == iters else None, "note": m["note"], "blas": m["blas"],
                         "build_seconds": m["build_seconds"]})
            log(f"MLlib: {fmt_s(m['per_iteration'])} per iteration over {m['iterations']} "
                f"(built in {fmt_s(m['build_seconds'])}; BLAS {m['blas']}) {m['note']}")
        except Exception as exc:  # noqa: BLE001 - a failure is reported, not fatal to the other parts
            reason = next((ln.strip() for ln in str(exc).splitlines() if "Error" in ln or "Exception" in ln),
                          type(exc).__name__)
            rows.append({"system": "MLlib IndexedRowMatrix.multiply + collect", "status": "failed",
                         "note": reason[:200]})
            log(f"MLlib failed: {reason[:200]}")

    if args.methods and "broadcast" in args.methods and not args.no_profile:
        js = next(c["js"] for c, _ in runs if c["method"] == "broadcast" and not c.get("written"))
        out["profile"] = profile_iteration(js, n, SEED_A, sc)
        log(f"profile, on A kept as {out['profile']['kept_as']} ({out['profile']['blocks']} blocks of "
            f"{out['profile']['block'][0]}×{out['profile']['block'][1]}): " +
            ", ".join(f"{k} {fmt_s(v)}" for k, v in out["profile"].items() if isinstance(v, float)))
    del a
    gc.collect()


# ---------------------------------------------------------------- 2. lineage growth


def part_lineage(args, sc, report: dict) -> None:
    n, iters, w = args.lineage_n, args.lineage_iterations, args.window
    method = args.methods[0] if args.methods else "broadcast"
    text = POWER.format(n=n, seed=SEED_A)
    log(f"\n== 2. lineage growth: jampi {method}, n={n}, {iters} iterations ==")
    config = configure(method, text, "<power>", "A", n * n * 8, {"iters": iters})
    js, plan, facts = config["js"], config["plan"], config["facts"]
    log(f"{config['label']}: A made by {facts['big_made_by']}, body products {facts['body_products']}")
    run_program(js, plan_for(js, text, "<power>", {"iters": 3}), sc=sc)  # warm-up
    early_at = min(10, iters - 1)
    # sampled at the start of iterations outside both windows (the sampling is not timed work)
    sample_early = min(early_at + w, iters - 1)
    sample_late = max(0, iters - 2 * w - 1)
    run = run_program(js, plan, sample_at=(sample_early, sample_late), sc=sc)
    end_state = tree_state(sc)
    times = run["iteration_times"]
    for i in (sample_early, sample_late):  # the sampling ran at the start of iteration i
        if i < len(times):
            times[i] = float("nan")

    def window(center: int) -> list[float]:
        lo = max(0, min(center - w // 2, len(times) - w))
        return [t for t in times[lo:lo + w] if not math.isnan(t)]

    early, late = window(early_at - 1), window(len(times) - 1 - w // 2)
    ratio = mean(late) / mean(early)
    checkpoints = {}
    for k in sorted({10, 50, 100, 200, 300, 400, 500, iters}):
        if k <= len(times):
            checkpoints[k] = mean(window(k - 1))
    out = {"n": n, "iterations": iters, "method": method, "window": w, "early_mean": mean(early),
           "late_mean": mean(late), "early_median": statistics.median(early), "late_median": statistics.median(late),
           "ratio": ratio, "ratio_median": statistics.median(late) / statistics.median(early),
           "mean_all": mean(t for t in times if not math.isnan(t)), "checkpoints": checkpoints,
           "state_early": run["samples"].get(sample_early), "state_late": run["samples"].get(sample_late),
           "state_end": end_state, "plan": facts, "sampled_at": [sample_early, sample_late],
           "jobs_per_iteration": run["jobs"] / max(1, run["iterations"]), "note": config["note"]}
    report["lineage"] = out
    log(f"iterations ~{early_at}: {fmt_s(mean(early))} (median {fmt_s(out['early_median'])}); "
        f"~{iters}: {fmt_s(mean(late))} (median {fmt_s(out['late_median'])}); late/early {ratio:.3f}")
    log("  mean of the window ending near iteration: " + ", ".join(f"{k}: {fmt_s(v)}" for k, v in checkpoints.items()))
    log(f"  at iteration {sample_early}: {out['state_early']}; at {sample_late}: {out['state_late']}; "
        f"after the loop: {end_state}")


# ---------------------------------------------------------------- 3. CG ridge regression


def numpy_cg(x: np.ndarray, y: np.ndarray, tol: float, maxit: int) -> tuple[np.ndarray, int, float]:
    b = x.T @ y
    w = np.zeros((x.shape[1], 1))
    r = b.copy()
    p = r.copy()
    rs = float(np.sum(r * r))
    stop = tol * tol * rs
    i = 0
    while i < maxit:
        ap = x.T @ (x @ p) + LAM * p
        alpha = rs / float(np.sum(p * ap))
        w = w + alpha * p
        r = r - alpha * ap
        rsnew = float(np.sum(r * r))
        p = r + (rsnew / rs) * p
        rs = rsnew
        i += 1
        if rs <= stop:
            break
    return w, i, rs


def true_residual(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    b = x.T @ y
    return float(np.linalg.norm(x.T @ (x @ w) + LAM * w - b) / np.linalg.norm(b))


def part_cg(args, sc, report: dict) -> None:
    n, d, tol, maxit = args.cg_n, args.cg_d, args.cg_tol, args.cg_maxit
    text = CG.format(lam=LAM, tol=tol, maxit=maxit, n=n, d=d, sx=SEED_X, sy=SEED_Y)
    log(f"\n== 3. CG ridge regression, X {n}×{d}, relative residual {tol:g} ==")

    def numpy_whole():
        x = generate("normal", (n, d), "float64", seed=SEED_X)
        y = generate("normal", (n, 1), "float64", seed=SEED_Y)
        t = time.perf_counter()
        w, its, rs = numpy_cg(x, y, tol, maxit)
        return w, its, rs, time.perf_counter() - t, x, y

    numpy_whole()  # warm-up
    gc.collect()
    t0 = time.perf_counter()
    w_np, its_np, rs_np, cg_only, x, y = numpy_whole()
    total_np = time.perf_counter() - t0
    rows = [{"system": "NumPy", "total": total_np, "loop": cg_only, "iterations": its_np,
             "per_iteration": cg_only / its_np, "residual": true_residual(x, y, w_np), "agree": 0.0}]
    log(f"NumPy: {fmt_s(total_np)} whole ({fmt_s(cg_only)} the CG), {its_np} iterations, "
        f"relative residual {rows[0]['residual']:.1e}")
    configs = [configure("auto", text, "<cg>", "X", n * d * 8, {})]
    for method in args.cg_methods:
        configs.append(configure(method, text, "<cg>", "X", n * d * 8, {}))
        if configs[-1]["lowered"] and method == args.cg_methods[0] and not args.no_cg_written:
            configs.append(configure(method, text, "<cg>", "X", n * d * 8, {}, lower=False))
    for config in configs:
        js, facts, label, method = (config[key] for key in ("js", "facts", "label", "method"))
        log(f"{label}: X made by {facts['big_made_by']}, body products {facts['body_products']}, "
            f"other body steps {facts['body_other']}")
        if method != "auto" and not facts["body_products_on_spark"]:
            log("  the loop's products are not on Spark: row skipped")
            rows.append({"system": label, "status": "failed", "note": f"plan: {facts}"})
            continue
        run_program(js, plan_for(js, text, "<cg>", {"maxit": 2}), sc=sc)  # warm-up, same sizes
        t0 = time.perf_counter()
        run_plan = plan_for(js, text, "<cg>")
        planning = time.perf_counter() - t0
        run = run_program(js, run_plan, sc=sc)
        w = np.asarray(run["values"]["w"])
        its = int(run["values"]["i"])
        row = {"system": label, "method": method, "total": planning + run["total"], "planning": planning,
               "before_loop": run["before_loop"], "loop": run["loop"], "iterations": its,
               "per_iteration": run["loop"] / max(1, its), "residual": true_residual(x, y, w),
               "agree": rel(w, w_np), "jobs_per_iteration": run["jobs"] / max(1, its), "plan": facts,
               "profile": step_profile(run_plan, run["timings"], its), "note": config["note"]}
        rows.append(row)
        log(f"  {fmt_s(row['total'])} whole (planning {fmt_s(planning)}, before the loop "
            f"{fmt_s(run['before_loop'])}, loop {fmt_s(run['loop'])}), {its} iterations, "
            f"{fmt_s(row['per_iteration'])} each, {row['jobs_per_iteration']:.1f} Spark jobs each; "
            f"w agrees with NumPy's to {row['agree']:.1e}, relative residual {row['residual']:.1e}")
        for p in row["profile"][:6]:
            log(f"    {p['step']:<14} {p['method']:<9} {fmt_s(p['seconds_per_iteration'])} per iteration")
        del run
        gc.collect()
    report["cg"] = {"n": n, "d": d, "tol": tol, "rows": rows}


# ---------------------------------------------------------------- the report


def markdown(report: dict, args) -> str:
    meta = report["meta"]
    out = [f"{meta['date']}, `{meta['command']}`. Machine: {meta['machine']}; Python {meta['python']}; "
           f"NumPy {meta['numpy']}; PySpark {meta['pyspark']}; Java {meta['java']}; Dask {meta['dask']}; "
           f"`{meta['master']}`; MLlib BLAS: {meta['mllib_blas']}. Code: {meta['code']}. Load average at the start: "
           f"{', '.join(map(str, meta['load_average']))}; at the end: "
           f"{', '.join(map(str, meta.get('load_average_end', [])))}. Wall clock of the run: "
           f"{meta.get('seconds', 0):.0f} s.", ""]
    targets: list[tuple[str, str, bool | None]] = []
    power = report.get("power")
    if power:
        rows = power["rows"]
        base = next((r["per_iteration"] for r in rows if r["system"] == "NumPy"), None)
        out += [f"### 1. Power iteration, n={power['n']}, {power['iterations']} iterations (float64)", "",
                "| system | s / iteration | median | ÷ NumPy | iterations timed | Spark jobs / iteration | "
                "before the loop | v vs NumPy | note |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.get("status") in ("failed", "skipped"):
                out.append(f"| {r['system']} | {r['status']} | | | | | | | {r.get('note', '')} |")
                continue
            ratio = f"{r['per_iteration'] / base:.2f}×" if base else "—"
            agree = f"{r['agree']:.1e}" if r.get("agree") is not None else "—"
            jobs = f"{r['jobs_per_iteration']:.1f}" if "jobs_per_iteration" in r else "—"
            out.append(f"| {r['system']} | {fmt_s(r['per_iteration'])} | {fmt_s(r.get('median'))} | {ratio} | "
                       f"{r['iterations']} | {jobs} | {fmt_s(r.get('before_loop'))} | {agree} | "
                       f"{r.get('note', '')} |")
        jampi = [r for r in rows if r.get("method") in args.methods and not r.get("written")
                 and r.get("per_iteration")]
        mllib = next((r for r in rows if r["system"].startswith("MLlib") and r.get("per_iteration")), None)
        dask = next((r for r in rows if r["system"].startswith("Dask") and r.get("per_iteration")), None)
        for best in jampi:
            j, name = best["per_iteration"], f"jampi {best['method']}"
            targets.append((f"power iteration: {name} / NumPy ≤ 2×", f"{j / base:.2f}× ({fmt_s(j)} vs "
                            f"{fmt_s(base)})", j / base <= 2))
            targets.append((f"power iteration: MLlib / {name} ≥ 5×", f"{mllib['per_iteration'] / j:.2f}× "
                            f"({fmt_s(mllib['per_iteration'])} vs {fmt_s(j)})" if mllib else "—",
                            mllib["per_iteration"] / j >= 5 if mllib else None))
            targets.append((f"power iteration: {name} / Dask ≤ 1.5×", f"{j / dask['per_iteration']:.2f}× "
                            f"({fmt_s(j)} vs {fmt_s(dask['per_iteration'])})" if dask else "—",
                            j / dask["per_iteration"] <= 1.5 if dask else None))
        out += [""]
        profiled = [r for r in rows if r.get("profile")]
        if profiled:
            out += ["Where an iteration of jampi's goes (each step's own time, per iteration; the rest of the "
                    "iteration is between steps: slot bookkeeping, releasing the previous iteration's blocks "
                    "and broadcast):", ""]
            for r in profiled:
                parts = ", ".join(f"{p['step']} [{p['method']}] {fmt_s(p['seconds_per_iteration'])}"
                                  for p in r["profile"])
                stepped = sum(p["seconds_per_iteration"] for p in r["profile"])
                out.append(f"- {r['system']}: {parts}; between steps {fmt_s(r['per_iteration'] - stepped)}.")
            out.append("")
        prof = power.get("profile")
        if prof:
            out += [f"The same parts alone, on A kept as the plan keeps it ({prof['kept_as']}; {prof['blocks']} "
                    f"blocks of {prof['block'][0]}×{prof['block'][1]}; medians): an empty 4-task job "
                    f"{fmt_s(prof['empty_job'])}; a job that reads A's blocks into the Python workers and does "
                    f"nothing else {fmt_s(prof['read_blocks'])}; the broadcast product with its result collected "
                    f"{fmt_s(prof['broadcast_product'])}; NumPy's product of one block by its piece of v "
                    f"{fmt_s(prof['block_gemv_numpy'])}.", ""]
    lin = report.get("lineage")
    if lin:
        ok = abs(lin["ratio"] - 1) <= 0.10  # faster late is no growth, but a ratio far below 1 means load changed
        targets.append((f"lineage: iteration ~{lin['iterations']} within 10 % of iteration ~10 "
                        f"(n={lin['n']}, jampi {lin['method']})",
                        f"{lin['ratio']:.3f} (means of {lin['window']}: {fmt_s(lin['early_mean'])} → "
                        f"{fmt_s(lin['late_mean'])}; medians {lin['ratio_median']:.3f})", ok))
        state = lambda s: (f"{s['cached_rdds']} cached RDDs, {s['python_workers']} Python workers, "  # noqa: E731
                           f"{s['rss_mib']} MiB RSS") if s else "—"
        out += [f"### 2. Lineage growth: jampi {lin['method']}, n={lin['n']}, {lin['iterations']} iterations", "",
                "| around iteration | " + " | ".join(str(k) for k in lin["checkpoints"]) + " |",
                "|---|" + "---|" * len(lin["checkpoints"]),
                f"| s / iteration (mean of {lin['window']}) | "
                + " | ".join(fmt_s(v) for v in lin["checkpoints"].values()) + " |", "",
                f"Iteration {lin['sampled_at'][0]}: {state(lin['state_early'])}; iteration {lin['sampled_at'][1]}: "
                f"{state(lin['state_late'])}; after the loop: {state(lin['state_end'])}. "
                f"{lin['jobs_per_iteration']:.1f} Spark jobs per iteration."
                + (f" Note: {lin['note']}." if lin.get("note") else ""), ""]
    cg = report.get("cg")
    if cg:
        rows = cg["rows"]
        base = rows[0]["total"]
        out += [f"### 3. CG ridge regression, X {cg['n']}×{cg['d']}, λ={LAM}, to relative residual {cg['tol']:g}", "",
                "| system | whole run | ÷ NumPy | before the loop | loop | iterations | s / iteration | "
                "Spark jobs / iteration | true rel. residual | w vs NumPy | note |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.get("status"):
                out.append(f"| {r['system']} | {r['status']} | | | | | | | | | {r.get('note', '')} |")
                continue
            jobs = f"{r['jobs_per_iteration']:.1f}" if "jobs_per_iteration" in r else "—"
            out.append(f"| {r['system']} | {fmt_s(r['total'])} | {r['total'] / base:.2f}× | "
                       f"{fmt_s(r.get('before_loop'))} | {fmt_s(r['loop'])} | {r['iterations']} | "
                       f"{fmt_s(r['per_iteration'])} | {jobs} | {r['residual']:.1e} | {r['agree']:.1e} | "
                       f"{r.get('note', '')} |")
        out += ["", "NumPy's whole run generates X and y and runs the CG; jampi's is plan + run of the program "
                "(which generates them too).", ""]
        for r in rows[1:]:
            if r.get("total"):
                targets.append((f"CG: {r['system']} ≤ 2× NumPy", f"{r['total'] / base:.2f}× ({fmt_s(r['total'])} vs "
                                f"{fmt_s(base)}); {r['iterations']} iterations vs {rows[0]['iterations']}",
                                r["total"] / base <= 2))
        profiled = [r for r in rows if r.get("profile")]
        if profiled:
            out += ["Where a CG iteration of jampi's goes (each step's own time, per iteration):", ""]
            for r in profiled:
                parts = ", ".join(f"{p['step']} [{p['method']}] {fmt_s(p['seconds_per_iteration'])}"
                                  for p in r["profile"][:8])
                stepped = sum(p["seconds_per_iteration"] for p in r["profile"])
                out.append(f"- {r['system']}: {parts}{', …' if len(r['profile']) > 8 else ''}; between steps "
                           f"{fmt_s(r['per_iteration'] - stepped)}.")
            out.append("")
    out = ["### Targets", "", "| target | measured | verdict |", "|---|---|---|",
           *[f"| {t} | {m} | {verdict(ok)} |" for t, m, ok in targets], ""] + out
    return "\n".join(out)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if k not in ("v", "values", "timings")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.5g}")
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    return value


# The sizes, and the quick ones of --small; an option given on the command line wins over both.
DEFAULTS = {"n": 8192, "iterations": 50, "mllib_iterations": 50, "written_iterations": 3,
            "lineage_n": 2048, "lineage_iterations": 500, "cg_n": 8192, "cg_d": 1024}
SMALL = {"n": 1024, "iterations": 10, "mllib_iterations": 10, "written_iterations": 2,
         "lineage_n": 512, "lineage_iterations": 60, "cg_n": 2048, "cg_d": 256}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help=f"power iteration: A is n×n (default {DEFAULTS['n']})")
    parser.add_argument("--iterations", type=int, help=f"power iteration (default {DEFAULTS['iterations']})")
    parser.add_argument("--methods", default="broadcast,cannon",
                        help="the Spark methods forced for jampi's product (comma-separated)")
    parser.add_argument("--mllib-iterations", type=int, help="0: no MLlib row (default: --iterations)")
    parser.add_argument("--mllib-budget", type=float, default=300.0,
                        help="seconds MLlib's timed loop may take; fewer iterations beyond it")
    parser.add_argument("--written-iterations", type=int,
                        help="iterations of the program as written (A on the driver, shipped every iteration; "
                             f"default {DEFAULTS['written_iterations']}; 0: not run)")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-part profile of an iteration")
    parser.add_argument("--lineage-n", type=int, help=f"default {DEFAULTS['lineage_n']}")
    parser.add_argument("--lineage-iterations", type=int, help=f"default {DEFAULTS['lineage_iterations']}")
    parser.add_argument("--window", type=int, default=5, help="iterations averaged around each end")
    parser.add_argument("--cg-n", type=int, help=f"rows of X (default {DEFAULTS['cg_n']})")
    parser.add_argument("--cg-d", type=int, help=f"columns of X (default {DEFAULTS['cg_d']})")
    parser.add_argument("--cg-tol", type=float, default=1e-10, help="relative residual to reach")
    parser.add_argument("--cg-maxit", type=int, default=1000)
    parser.add_argument("--cg-methods", default="broadcast,cannon")
    parser.add_argument("--no-cg-written", action="store_true", help="skip CG forced with X as written")
    parser.add_argument("--parts", default="power,lineage,cg")
    parser.add_argument("--small", action="store_true", help="every part at a quick size")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, args.iterations if key == "mllib_iterations" and args.iterations else value)
    args.methods = [m for m in args.methods.split(",") if m]
    args.cg_methods = [m for m in args.cg_methods.split(",") if m]
    args.parts = [p for p in args.parts.split(",") if p]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    spark = get_spark(MASTER)
    sc = spark.sparkContext
    report: dict[str, Any] = {"meta": machine(sc)}
    meta = report["meta"]
    log(f"{meta['date']}  {meta['machine']}  {meta['master']}  NumPy {meta['numpy']}  PySpark {meta['pyspark']}  "
        f"Java {meta['java']}  load {meta['load_average']}")
    if "power" in args.parts:
        part_power(args, sc, spark, report)
    if "lineage" in args.parts:
        part_lineage(args, sc, report)
    if "cg" in args.parts:
        part_cg(args, sc, report)
    meta["seconds"] = time.perf_counter() - started
    meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = markdown(report, args)
    log("\n" + text)
    figures = _jsonable(report)
    log(json.dumps(figures))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
