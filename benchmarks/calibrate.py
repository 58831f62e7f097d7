"""Measure the cost model's constants on this machine and compare them with
``jampi_dsl.planner.cost.CALIBRATION`` (where the values the planner uses live).

    python benchmarks/calibrate.py

Prints one line per constant: measured, current, and the ratio. Update
CALIBRATION by hand from a quiet run; the planner never reads this script.
"""

from __future__ import annotations

import time

import numpy as np

from jampi_dsl.planner.cost import CALIBRATION


def best(fn, reps: int = 3) -> float:
    fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    measured: dict[str, float] = {}
    n = 2048
    a, b = np.random.default_rng(0).random((n, n)), np.random.default_rng(1).random((n, n))
    measured["local_gemm_flops"] = 2 * n**3 / best(lambda: a @ b)
    big = np.random.default_rng(2).random((4096, 4096))
    measured["local_stream_bytes_per_s"] = 3 * big.nbytes / best(lambda: big + big)

    from jampi_dsl.executors.cannon import cannon_matmul
    from jampi_dsl.executors.distributed import DistMatrix
    from jampi_dsl.executors.mllib import to_block_matrix
    from jampi_dsl.executors.sources import GeneratorSource
    from jampi_dsl.session import get_spark, stop_spark

    spark = get_spark()
    try:
        tiny = DistMatrix.from_source(spark, GeneratorSource("uniform", (64, 64), "float64", 1), (32, 32))
        measured["spark_job_seconds"] = best(tiny.sum)
        small = GeneratorSource("uniform", (64, 64), "float64", 2)
        measured["cannon_stage_seconds"] = best(lambda: cannon_matmul(spark, small, small).unpersist(), reps=2)
        cached = DistMatrix.from_source(spark, GeneratorSource("uniform", (4096, 4096), "float64", 3),
                                        (2048, 2048)).materialize()
        read = best(cached.sum, reps=2) - measured["spark_job_seconds"]
        # Four tasks read their blocks in parallel on the cores there are.
        measured["jvm_python_bytes_per_s"] = cached.nbytes / max(read, 1e-3) / 2
        cached.unpersist()
        m = 1024
        x = np.random.default_rng(4).random((m, m))
        jx = to_block_matrix(spark, x, m // 2)

        def mllib():
            product = jx.multiply(jx)
            product.blocks().count()

        seconds = best(mllib, reps=2)
        measured["mllib_flops_per_core"] = 2 * m**3 / seconds / 2  # two cores
        measured["mllib_stage_seconds"] = seconds - 2 * m**3 / (CALIBRATION["mllib_flops_per_core"] * 2)
    finally:
        stop_spark()

    print(f"{'constant':28s} {'measured':>12s} {'CALIBRATION':>12s} {'ratio':>7s}")
    for key, value in measured.items():
        current = CALIBRATION[key]
        print(f"{key:28s} {value:12.4g} {current:12.4g} {value / current:7.2f}")


if __name__ == "__main__":
    main()
