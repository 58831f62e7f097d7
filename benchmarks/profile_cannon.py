"""Where a Cannon stage's time goes, function by function: py-spy on its tasks.

    python benchmarks/profile_cannon.py [--n 4096] [--dtype float64] [--out DIR]

The suite (``python -m benchmarks``) splits the stage into inputs / products /
waiting for peers / Spark overhead from the tasks' own clocks; this looks inside
those parts. It makes A and B as cached distributed blocks (as the suite's
"Cannon stage" row does), runs one warm-up product, then records every Python
worker of the embedded Spark with py-spy (``--subprocesses``, native frames
included, so the BLAS calls show; py-spy pauses a process for each sample) during
one more product, and prints the
functions that held the most samples, by own time and by time below them.
The raw collapsed stacks are kept in DIR for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil


def _daemon_pids() -> list[int]:
    """PySpark's worker daemons: every task's Python worker is forked from one."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "pyspark.daemon" in cmd or "pyspark/daemon.py" in cmd:
            pids.append(proc.pid)
    return pids


def _summarise(raw: str, top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    below: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            below[frame] += n
    print(f"{total} samples across the stage's workers")
    print(f"\nown time (top {top}):")
    for name, n in own.most_common(top):
        print(f"  {100 * n / max(1, total):5.1f}%  {name}")
    print(f"\ntime including callees (top {top}):")
    for name, n in below.most_common(top):
        print(f"  {100 * n / max(1, total):5.1f}%  {name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None, help="folder for the raw collapsed stacks (default: a temp folder)")
    args = ap.parse_args()
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2

    from jampi_dsl.executors.cannon import CannonConfig, cannon_matmul
    from jampi_dsl.executors.distributed import DistMatrix
    from jampi_dsl.executors.sources import GeneratorSource
    from jampi_dsl.session import get_spark, grid_side, stop_spark, task_slots

    spark = get_spark()
    try:
        n = args.n
        q = grid_side(task_slots(spark))
        block = (-(-n // q), -(-n // q))
        da = DistMatrix.from_source(spark, GeneratorSource("uniform", (n, n), args.dtype, 1), block).materialize()
        db = DistMatrix.from_source(spark, GeneratorSource("uniform", (n, n), args.dtype, 2), block).materialize()
        cannon_matmul(spark, da, db).unpersist()  # warm-up: workers started, code imported
        daemons = _daemon_pids()
        if not daemons:
            print("no PySpark worker daemon found", file=sys.stderr)
            return 1
        out = args.out or tempfile.mkdtemp(prefix="jampi-profile-")
        os.makedirs(out, exist_ok=True)
        raw_path = os.path.join(out, f"cannon-{n}-{args.dtype}.txt")
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(daemons[0]), "--subprocesses", "--native",
                                "--rate", "200", "--format", "raw", "--output", raw_path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(2.0)  # py-spy attaches to the daemon and its children
        stats: list = []
        t0 = time.perf_counter()
        cannon_matmul(spark, da, db, config=CannonConfig(stats=stats)).unpersist()
        wall = time.perf_counter() - t0
        time.sleep(0.5)
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        _, err = spy.communicate(timeout=60)
        slow = max(stats, key=lambda s: s.get("total", 0.0))
        print(f"n={n} {args.dtype}, {q}x{q} grid: stage {wall:.2f} s; slowest task: inputs "
              f"{slow.get('inputs_ready', 0):.2f} s, products {slow.get('gemm', 0):.2f} s, waiting for peers "
              f"{slow.get('exchange_wait', 0):.2f} s, total {slow.get('total', 0):.2f} s, "
              f"{int(slow.get('panels', 1))} panels per block")
        if not os.path.exists(raw_path):
            print(f"py-spy wrote nothing: {err.decode(errors='replace').strip()[-500:]}", file=sys.stderr)
            return 1
        with open(raw_path) as fh:
            _summarise(fh.read(), args.top)
        print(f"\nraw collapsed stacks: {raw_path}")
        da.unpersist()
        db.unpersist()
    finally:
        stop_spark()
    return 0


if __name__ == "__main__":
    sys.exit(main())
