"""Is the planner's choice as fast as the best forced method? ``C = A @ B`` for
n = 512, 2048, 8192 on the embedded default, every applicable method forced in
turn and then ``auto``, all in one run and one Spark session.

    python benchmarks/planner_choice.py [--sizes 512 2048 8192] [--reps 2] [--skip mllib]

Each timing is a whole jampi run of the program (plan + execute, Spark already
started), warm (one untimed run first), best of ``--reps``. Prints the table
and the gap between ``auto`` and the best forced method.
"""

from __future__ import annotations

import argparse
import time

import jampi_dsl
from jampi_dsl.api import build_source, plan_program
from jampi_dsl.errors import PlanError
from jampi_dsl.planner import ir
from jampi_dsl.planner.build import ParamValue

METHODS = ("local", "cannon", "broadcast", "mllib")
PROGRAM = "param n = 512\nA = random(n, n, seed=1)\nB = random(n, n, seed=2)\nC = A @ B\nprint(norm(C))\n"


def timed(session, n: int, reps: int) -> float | None:
    try:
        session.run_text(PROGRAM, params={"n": n})  # warm-up (and a plan check)
    except PlanError as err:
        print(f"    {session.executor:9s} not applicable: {err.message}")
        return None
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        session.run_text(PROGRAM, params={"n": n})
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS)
    args = parser.parse_args()
    jampi_dsl.session().spark()  # start Spark once, outside every timing
    rows = []
    for n in args.sizes:
        print(f"n = {n}")
        times = {}
        for method in (m for m in METHODS if m not in args.skip):
            times[method] = timed(jampi_dsl.session(executor=method), n, args.reps)
            if times[method] is not None:
                print(f"    {method:9s} {times[method]:8.2f} s", flush=True)
        auto_session = jampi_dsl.session()
        program = build_source(PROGRAM, "<bench>", {"n": ParamValue(float(n))})
        plan = plan_program(program, auto_session.resources)
        chosen = next(s.method for s in plan.steps if isinstance(s.node, ir.PRODUCT_NODES))
        auto = timed(auto_session, n, args.reps)
        forced = {m: t for m, t in times.items() if t is not None}
        best_method = min(forced, key=forced.get)
        gap = auto / forced[best_method] - 1
        print(f"    auto      {auto:8.2f} s  (chose {chosen}; best forced {best_method}; gap {gap:+.0%})")
        rows.append((n, forced, auto, chosen, best_method, gap))
    print("\n| n | " + " | ".join(METHODS) + " | auto (choice) | gap to best |")
    print("|---|" + "---|" * (len(METHODS) + 2))
    for n, forced, auto, chosen, _best, gap in rows:
        cells = [f"{forced[m]:.2f} s" if m in forced else "n/a" for m in METHODS]
        print(f"| {n} | " + " | ".join(cells) + f" | {auto:.2f} s ({chosen}) | {gap:+.0%} |")


if __name__ == "__main__":
    main()
