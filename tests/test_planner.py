"""The cost-based planner over a table of situations, and its promises at run time:
small programs never touch Spark, dynamic allocation falls back to MLlib."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import jampi_dsl
from jampi_dsl.errors import PlanError
from jampi_dsl.executors.blockgen import generate
from jampi_dsl.planner import ir
from jampi_dsl.planner.cost import Resources
from jampi_dsl.planner.graph import Program
from jampi_dsl.planner.physical import lower

GiB = 2**30
# The embedded default on this machine: 2 cores, 4 slots.
EMBEDDED = Resources(spark=True, slots=4, task_cpus=1, local_cores=2, driver_budget=9 * GiB,
                     task_memory=3 * GiB, master="local[4]", cores=2)
SMALL_DRIVER = replace(EMBEDDED, driver_budget=2 * GiB)
# A cluster of 16 executors x 8 cores, driver on a small machine.
CLUSTER = Resources(spark=True, slots=128, task_cpus=1, local_cores=4, driver_budget=8 * GiB,
                    task_memory=4 * GiB, master="spark://x", cores=128, executors=16)


def _product(m: int, k: int, n: int, dtype: str = "float64") -> ir.MatMul:
    return ir.MatMul(ir.Generate("uniform", (m, k), dtype, 1), ir.Generate("uniform", (k, n), dtype, 2))


def _method(node: ir.Node, resources: Resources, executor: str = "auto") -> str:
    plan = lower(Program((ir.Result(node),)), resources, executor)
    return plan.step(node).method


SITUATIONS = [
    # (product m, k, n) , resources, forced, expected method
    ((256, 256, 256), EMBEDDED, "auto", "local"),
    ((4096, 4096, 4096), EMBEDDED, "auto", "local"),  # one machine: NumPy on both cores wins
    ((12000, 12000, 12000), SMALL_DRIVER, "auto", "cannon"),  # 3.2 GiB of operands: off the driver
    ((12000, 12000, 12000), replace(SMALL_DRIVER, dynamic_allocation=True), "auto", "mllib"),
    ((30000, 30000, 4), EMBEDDED, "auto", "local"),  # matrix times thin matrix: fits the driver
    ((30000, 30000, 4), replace(EMBEDDED, driver_budget=GiB), "auto", "broadcast"),
    ((16384, 16384, 16384), CLUSTER, "auto", "cannon"),  # 128 cores beat the driver's 4
    ((16384, 16384, 16384), replace(CLUSTER, dynamic_allocation=True), "auto", "mllib"),
    ((512, 512, 512), CLUSTER, "auto", "local"),  # too small for a stage to pay off
    ((512, 512, 512), EMBEDDED, "cannon", "cannon"),
    ((512, 512, 512), EMBEDDED, "mllib", "mllib"),
    ((512, 512, 3), EMBEDDED, "broadcast", "broadcast"),
    ((512, 512, 512), Resources.local_only(), "auto", "local"),
]


@pytest.mark.parametrize("dims,resources,forced,expected", SITUATIONS)
def test_method_choice(dims, resources, forced, expected):
    assert _method(_product(*dims), resources, forced) == expected


def test_forced_method_that_cannot_run_is_a_plan_error():
    with pytest.raises(PlanError, match="dynamic allocation"):
        _method(_product(512, 512, 512), replace(EMBEDDED, dynamic_allocation=True), "cannon")
    with pytest.raises(PlanError, match="not available|no Spark"):
        _method(_product(512, 512, 512), Resources.local_only(), "cannon")


def test_memory_verdict_before_any_job():
    tiny = replace(EMBEDDED, driver_budget=2**20, task_memory=2**20, broadcast_max=2**10)
    with pytest.raises(PlanError) as err:
        _method(_product(4096, 4096, 4096), tiny)
    text = str(err.value)
    assert "memory" in text and "GiB" in text and "cannon" in text and "local" in text


def test_placement_follows_inputs_and_consumers():
    a = ir.Generate("uniform", (12000, 12000), "float64", 1)
    product = ir.MatMul(a, a, trans_a=True)
    scaled = ir.Binary("*", ir.Const(2.0), product)
    total = ir.Reduce("norm", scaled)
    plan = lower(Program((ir.Print(total, "s"),)), SMALL_DRIVER)
    methods = {type(s.node).__name__: s.method for s in plan.steps}
    assert methods["MatMul"] == "cannon"
    assert methods["Generate"] == "spark"  # made by the tasks that use it
    assert methods["Binary"] == "spark" and methods["Reduce"] == "spark"  # follows its input
    assert methods["Print"] == "local"  # a scalar: back on the driver


def test_small_programs_run_without_any_spark_job(spark):
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup(None))
    values = jampi_dsl.session().run_text(
        "A = random(256, 256, seed=1)\nB = A @ A.T + 1\nprint(norm(B))\nprint(B @ ones(256, 1))\n"
    )
    assert set(tracker.getJobIdsForGroup(None)) == before, "a small program started a Spark job"
    A = generate("uniform", (256, 256), "float64", seed=1)
    assert abs(values["norm(B)"] - np.linalg.norm(A @ A.T + 1)) < 1e-9 * np.linalg.norm(A @ A.T + 1)


def test_dynamic_allocation_falls_back_to_mllib(spark):
    conf = {"spark.dynamicAllocation.enabled": "true", "jampi.local.maxBytes": "1000",
            "jampi.broadcast.maxBytes": "1000"}
    session = jampi_dsl.session(conf=conf)
    A, B = session.random(60, 50, seed=3), session.randn(50, 40, seed=4)
    text = (A @ B).explain()
    assert "[mllib]" in text and "dynamic allocation" in text, text
    expected = generate("uniform", (60, 50), "float64", seed=3) @ generate("normal", (50, 40), "float64", seed=4)
    np.testing.assert_allclose((A @ B).to_numpy(), expected, rtol=1e-12)
    # Without dynamic allocation the barrier stage is a candidate again (chosen or runner-up on cost).
    plain = jampi_dsl.session(conf={k: v for k, v in conf.items() if k.startswith("jampi.")})
    A2, B2 = plain.random(60, 50, seed=3), plain.randn(50, 40, seed=4)
    text = (A2 @ B2).explain()
    assert "dynamic allocation" not in text and ("[cannon]" in text or "runner-up cannon" in text), text
