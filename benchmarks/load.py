"""Loading a matrix into distributed blocks on the embedded default, in GB/s.

    python benchmarks/load.py [--n 8192] [--reps 3]

For an n×n float64 matrix in ``.npy`` and in coordinate Parquet it times:
- tasks reading their own blocks (what a Cannon task or a blockwise operation
  does with a file input: each task maps its slice of the file), measured as a
  job in which every task reads its block and reduces it;
- the same blocks cached in Spark's block manager (``materialize``: every
  block also crosses from the Python worker into the JVM);
- Parquet: read with pyarrow on the driver, validated, and distributed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from jampi_dsl.executors import formats
from jampi_dsl.executors.distributed import DistMatrix, choose_block
from jampi_dsl.executors.sources import NpySource
from jampi_dsl.session import get_spark, stop_spark, task_slots


def best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n = args.n
    spark = get_spark()
    slots = task_slots(spark)
    block = choose_block((n, n), slots)
    data = np.random.default_rng(0).standard_normal((n, n))
    gb = data.nbytes / 1e9
    folder = tempfile.mkdtemp(prefix="jampi-load-")
    try:
        path = os.path.join(folder, "m.npy")
        np.save(path, data)
        source = NpySource.open(path)
        print(f"n={n} float64 ({gb:.2f} GB), {slots} slots, blocks {block}")

        def tasks_read():
            total = DistMatrix.from_source(spark, source, block).sum()
            assert np.isfinite(total)

        def cached():
            m = DistMatrix.from_source(spark, source, block).materialize()
            m.unpersist()

        tasks_read()  # warm-up: Python workers started, file in the page cache
        t_read = best(tasks_read, args.reps)
        t_cache = best(cached, args.reps)
        print(f"  .npy, tasks read their blocks:   {t_read:6.2f} s  {gb / t_read:5.2f} GB/s")
        print(f"  .npy, blocks cached in Spark:    {t_cache:6.2f} s  {gb / t_cache:5.2f} GB/s")

        ppath = os.path.join(folder, "m.parquet")
        formats.write_parquet(ppath, data)

        def parquet():
            from jampi_dsl.planner.inputs import parquet_info

            form, shape, dtype = parquet_info(ppath, None, None, None)
            array = formats.read_parquet(ppath, dtype, shape, form, None)
            DistMatrix.from_numpy(spark, array, block).unpersist()

        t_parquet = best(parquet, args.reps)
        print(f"  coordinate Parquet -> blocks:    {t_parquet:6.2f} s  {gb / t_parquet:5.2f} GB/s (of dense data)")
    finally:
        for name in os.listdir(folder):
            full = os.path.join(folder, name)
            if os.path.isdir(full):
                for part in os.listdir(full):
                    os.unlink(os.path.join(full, part))
                os.rmdir(full)
            else:
                os.unlink(full)
        os.rmdir(folder)
        stop_spark()


if __name__ == "__main__":
    main()
