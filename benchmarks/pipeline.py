"""Multi-step distributed plans: no growth with history, bounded workers and memory.

    python benchmarks/pipeline.py [--iterations 6] [--n 512] [--d 64] [--api-n 1024]

Runs conjugate gradient for ridge regression, unrolled, under each Spark method on
``local[4]``, and reports, per method: the time of the first and of the last CG
iteration (the issue's "last steps within 1.3x of the first"), the most Python
worker processes alive at once, and the peak RSS of the whole process tree against
a run of one iteration. Then a Python-API power iteration at ``--api-n``, with
``float(norm(v))`` read every iteration, against the same loop pulled to NumPy and
fed back by hand. Prints a JSON line of every figure at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time

import numpy as np
import psutil

import jampi_dsl
from jampi_dsl.api import plan_source, resources_for
from jampi_dsl.executors.base import RunContext
from jampi_dsl.executors.blockgen import generate
from jampi_dsl.executors.flow import execute
from jampi_dsl.session import spark_for_plans

STATEMENTS_PER_ITERATION = 7  # the CG loop body below
ITERATIONS, N, D, LAM = 5, 512, 64, 0.1  # 5 iterations: 45 statements


def cg_program(iterations: int = ITERATIONS, n: int = N, d: int = D) -> str:
    """Conjugate gradient for ridge regression ((X.T X + lam I) w = X.T y), unrolled."""
    lines = [f"param lam = {LAM}", f"X = randn({n}, {d}, seed=1)", f"y = randn({n}, 1, seed=2)",
             "b = X.T @ y", f"w = zeros({d}, 1)", "r = b", "p = r", "rs = sum(r * r)"]
    for _ in range(iterations):
        lines += ["Ap = X.T @ (X @ p) + lam * p", "alpha = rs / sum(p * Ap)", "w = w + alpha * p",
                  "r = r - alpha * Ap", "rsnew = sum(r * r)", "p = r + (rsnew / rs) * p", "rs = rsnew"]
    return "\n".join(lines + ["print(w)", "print(rs)"]) + "\n"


def cg_numpy(iterations: int = ITERATIONS, n: int = N, d: int = D):
    """The same iterations in NumPy: (w, the last squared residual norm)."""
    X, y = generate("normal", (n, d), "float64", seed=1), generate("normal", (n, 1), "float64", seed=2)
    w, r = np.zeros((d, 1)), X.T @ y
    p, rs = r.copy(), float(np.sum(r * r))
    for _ in range(iterations):
        ap = X.T @ (X @ p) + LAM * p
        alpha = rs / float(np.sum(p * ap))
        w, r = w + alpha * p, r - alpha * ap
        rsnew = float(np.sum(r * r))
        p, rs = r + (rsnew / rs) * p, rsnew
    return w, rs


class TreeSampler:
    """Peak RSS of this process and all its descendants (the JVM, the Python workers), and the
    most Python workers alive at once, sampled every 50 ms."""

    def __init__(self):
        self.peak_rss = 0
        self.max_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        me = psutil.Process()
        while True:  # at least one sample, however short the run
            procs = [me] + me.children(recursive=True)
            rss, workers = 0, 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                    if "pyspark.daemon" in " ".join(p.cmdline()):
                        workers += 1
                except psutil.Error:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self.max_workers = max(self.max_workers, workers)
            if self._stop.wait(0.05):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_cg(executor: str, iterations: int, n: int, d: int) -> dict:
    plan = plan_source(cg_program(iterations, n, d), "<cg>", resources=resources_for("local[4]", {}),
                       executor=executor)
    lines: dict[int, float] = {}
    with TreeSampler() as sampler:
        started = time.perf_counter()
        result = execute(plan, RunContext(spark_factory=lambda: spark_for_plans("local[4]", {})))
        total = time.perf_counter() - started
    for timing in result.timings:
        span = timing.step.node.span
        if span is not None:
            lines[span.line] = lines.get(span.line, 0.0) + timing.seconds
    # statements 1-8 set up; iteration k is lines 9 + 7(k-1) .. 15 + 7(k-1)
    per_iteration = [sum(lines.get(9 + STATEMENTS_PER_ITERATION * k + s, 0.0) for s in range(STATEMENTS_PER_ITERATION))
                     for k in range(iterations)]
    return {"seconds": total, "first_iteration": per_iteration[0], "last_iteration": per_iteration[-1],
            "max_python_workers": sampler.max_workers, "peak_rss_mib": sampler.peak_rss / 2**20}


def api_power_iteration(n: int, iterations: int) -> dict:
    js = jampi_dsl.session(master="local[4]", executor="cannon")
    A = js.randn(n, n, seed=3)
    started = time.perf_counter()
    v = js.ones(n, 1)
    for _ in range(iterations):
        w = A @ v
        v = w / float(w.norm())
    lazy = time.perf_counter() - started
    result_lazy = v.to_numpy()

    started = time.perf_counter()
    v_np = np.ones((n, 1))
    for _ in range(iterations):
        w = (A @ js.matrix(v_np)).to_numpy()
        v_np = w / float(np.linalg.norm(w))
    by_hand = time.perf_counter() - started
    agree = float(np.linalg.norm(result_lazy - v_np) / np.linalg.norm(v_np))
    return {"lazy_seconds": lazy, "by_hand_seconds": by_hand, "ratio": lazy / by_hand, "agree": agree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--api-n", type=int, default=1024)
    parser.add_argument("--api-iterations", type=int, default=40)
    args = parser.parse_args()
    spark_for_plans("local[4]", {})
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; local[4]")
    figures: dict = {"cg": {}}
    statements = 8 + STATEMENTS_PER_ITERATION * args.iterations + 2
    print(f"CG ridge, n={args.n}, d={args.d}: {args.iterations} iterations ({statements} statements) "
          "against 1 iteration")
    print(f"{'method':10} {'total s':>8} {'iter 1 s':>9} {'last s':>8} {'last/1st':>9} "
          f"{'workers':>8} {'RSS MiB':>8} {'RSS 1-iter':>10} {'ratio':>6}")
    for executor in ("cannon", "broadcast", "mllib", "auto"):
        run_cg(executor, 2, args.n, args.d)  # warm the workers and the JIT
        short = run_cg(executor, 1, args.n, args.d)
        full = run_cg(executor, args.iterations, args.n, args.d)
        growth = full["last_iteration"] / full["first_iteration"]
        rss_ratio = full["peak_rss_mib"] / short["peak_rss_mib"]
        figures["cg"][executor] = dict(full, growth=growth, short_peak_rss_mib=short["peak_rss_mib"],
                                       rss_ratio=rss_ratio)
        print(f"{executor:10} {full['seconds']:8.2f} {full['first_iteration']:9.3f} {full['last_iteration']:8.3f} "
              f"{growth:9.2f} {full['max_python_workers']:8d} {full['peak_rss_mib']:8.0f} "
              f"{short['peak_rss_mib']:10.0f} {rss_ratio:6.2f}")
    api = api_power_iteration(args.api_n, args.api_iterations)
    figures["api_power_iteration"] = api
    print(f"API power iteration n={args.api_n}, {args.api_iterations} iterations, float(norm) each: "
          f"lazy {api['lazy_seconds']:.2f} s, pulled to NumPy by hand {api['by_hand_seconds']:.2f} s, "
          f"ratio {api['ratio']:.2f} (results agree to {api['agree']:.1e})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
