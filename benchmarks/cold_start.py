"""A cold ``jampi run`` on Spark with and without the JVM's class archive, interleaved.

    python -m benchmarks.cold_start [--n 4096] [--reps 3]

Each run is a fresh process (``jampi run PROG --executor cannon --quiet``), timed
from launch to exit: what a user waits for. ``C = A @ B`` on two ``.npy`` files of
n×n float64, the product written to a third. The archive is recorded first (an
untimed run, which records and checks it before it exits), in a cache folder of this benchmark's own, so the
user's cache is not touched; ``JAMPI_JVM_ARCHIVE=0`` gives the runs without it.
Also timed: the same steps inside one process (gateway JVM, SparkContext,
SparkSession, a first job), with and without the archive.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .common import child_env
from .e2e import PROGRAM, _jampi_argv

PHASES = """
import time
t0 = time.perf_counter()
from jampi_dsl import session
from pyspark import SparkConf, SparkContext
settings = session.session_conf()
session._with_jvm_archive(settings)
conf = SparkConf().setAll(list(settings.items()))
SparkContext._ensure_initialized(conf=conf)
t1 = time.perf_counter()
sc = SparkContext(conf=conf)
t2 = time.perf_counter()
from pyspark.sql import SparkSession
SparkSession(sc)
t3 = time.perf_counter()
sc.parallelize(range(4), 4).count()
t4 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.2f}")
"""


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {done.returncode}: {done.stderr[-500:]}")
    return time.perf_counter() - t0, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jampi-cold-") as folder:
        paths = {k: os.path.join(folder, f"{k}.npy") for k in "abc"}
        rng = np.random.default_rng(1)
        np.save(paths["a"], rng.random((args.n, args.n)))
        np.save(paths["b"], rng.random((args.n, args.n)))
        prog = os.path.join(folder, "prog.lin")
        with open(prog, "w") as fh:
            fh.write(PROGRAM.format(**paths))
        cache = os.path.join(folder, "cache")
        env_on = {**child_env(), "JAMPI_CACHE_DIR": cache, "JAMPI_JVM_ARCHIVE": "1"}
        env_off = {**env_on, "JAMPI_JVM_ARCHIVE": "0"}
        run = [*_jampi_argv(), "run", prog, "--executor", "cannon", "--quiet"]
        first, _ = timed_run(run, env_on)
        deadline = time.monotonic() + 300
        while not glob.glob(os.path.join(cache, "jvm", "*.jsa")) and time.monotonic() < deadline:
            time.sleep(0.5)
        archive = glob.glob(os.path.join(cache, "jvm", "*.jsa"))
        if not archive:
            sys.exit("the archive was not recorded")
        print(f"recording run {first:.2f} s; archive {os.path.getsize(archive[0]) / 2**20:.0f} MiB")
        times: dict[str, list[float]] = {"without": [], "with": []}
        phases: dict[str, list[list[float]]] = {"without": [], "with": []}
        for _ in range(args.reps):
            for label, env in (("without", env_off), ("with", env_on)):
                times[label].append(timed_run(run, env)[0])
                out = timed_run([sys.executable, "-c", PHASES], env)[1]
                phases[label].append([float(x) for x in out.split()])
        print(f"n={args.n}, {args.reps} runs each, interleaved; median (all runs)")
        print("| archive | `jampi run --executor cannon` | JVM up | SparkContext | SparkSession | first job |")
        print("|---|---|---|---|---|---|")
        for label in ("without", "with"):
            cols = np.median(np.array(phases[label]), axis=0)
            runs = ", ".join(f"{t:.1f}" for t in times[label])
            print(f"| {label} | {np.median(times[label]):.2f} s ({runs}) | " + " | ".join(f"{c:.2f} s" for c in cols) + " |")


if __name__ == "__main__":
    main()
