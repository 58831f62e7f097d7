"""Matrix-chain order: ``X.T @ X @ v`` as jampi plans it (X.T @ (X @ v), no n×n
product) against the left-to-right order a naive evaluator would use.

    python benchmarks/chain.py [--n 8192]

Prints both timings and the ratio; the plan's explain shows the order chosen.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jampi_dsl
from jampi_dsl.planner import ir
from jampi_dsl.planner.graph import Program
from jampi_dsl.planner.physical import lower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    args = parser.parse_args()
    n = args.n
    js = jampi_dsl.session(executor="local")
    X = js.matrix(np.random.default_rng(0).standard_normal((n, n)))
    v = js.matrix(np.random.default_rng(1).standard_normal((n, 1)))
    y = X.T @ X @ v

    plan = js.plan([ir.Result(y.node)])
    products = [s.node for s in plan.steps if isinstance(s.node, ir.PRODUCT_NODES)]
    print("planned products:", ", ".join(f"{p.a.type.shape}x{p.b.type.shape}" for p in products))
    started = time.perf_counter()
    planned = js.run_plan(plan).outputs[0].value
    t_planned = time.perf_counter() - started

    # The same DAG lowered without any rewrite: the order as written, left to right.
    naive_plan = lower(Program((ir.Result(y.node),)), js.resources, "local")
    started = time.perf_counter()
    naive = js.run_plan(naive_plan).outputs[0].value
    t_naive = time.perf_counter() - started

    err = np.linalg.norm(planned - naive) / np.linalg.norm(naive)
    print(f"n={n}: planned X.T @ (X @ v) {t_planned:.3f} s, left to right (X.T @ X) @ v {t_naive:.3f} s, "
          f"speed-up {t_naive / t_planned:.0f}x (results agree to {err:.1e})")


if __name__ == "__main__":
    main()
